"""``raycrawl crawl`` on the Ray cluster this script runs on.

    ray submit deploy/aws.yaml deploy/crawl.py -- SEED... --out s3://bucket/crawl \
        --state /var/lib/raycrawl/state [FLAG...]

``ray submit`` copies this file to the head node and runs it there with ``python``; every flag
of ``raycrawl crawl`` works, and the crawl joins the running cluster (``--address auto``)
unless ``--address`` is given. ``--state`` is a node-local folder (the same path on every
node: each node keeps the stores of the workers placed on it); OUT is where every node
writes: an object store (``s3://...``: the nodes need its credentials) or a folder every node
shares.

``ray submit`` joins the arguments into one shell command without quoting them: quote a seed
that holds ``&``, ``?`` or spaces twice (``"'https://a.com/?q=1&p=2'"``), or list the seeds
in a ``--seeds-file`` on the head. The crawl's actors outlive this script: if the
SSH session drops, ``raycrawl resume --state DIR`` (or ``--out URI``) on the head follows the
crawl again.
"""

from __future__ import annotations

import sys

from raycrawl.cli import build_parser, main


def argv(args: list[str]) -> list[str]:
    """The ``raycrawl`` command line for the script's arguments ``args``: ``crawl`` with
    ``--address auto`` added unless ``args`` name an address (in any spelling argparse
    accepts). Exits with status 2 on arguments ``raycrawl crawl`` rejects, as it would."""
    if build_parser().parse_args(["crawl", *args]).address is not None:
        return ["crawl", *args]
    return ["crawl", "--address", "auto", *args]  # before the args: they may end in "-- SEED"


if __name__ == "__main__":
    sys.exit(main(argv(sys.argv[1:])))
