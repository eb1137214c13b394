"""Log lines of a crawl's actors name the crawl and the actor.

Ray keeps each actor's stderr in its own log file (the dashboard's Logs view, ``ray logs``);
several crawls on one cluster make those hard to tell apart, so every line of raycrawl's
loggers in an actor process starts with the crawl id and the actor's role.  An actor owns its
process, so this is set once per process, when the actor starts.
"""

from __future__ import annotations

import logging
import sys

LOGGERS = ("raycrawl", "actors", "strategies")


def tag_logs(crawl_id: str, role: str) -> None:
    """Route raycrawl's loggers of this process to stderr as
    ``<time> <LEVEL> <crawl id> <role> <logger>: <message>``, INFO and up."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s %(levelname)s {crawl_id} {role} %(name)s: %(message)s"))
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False
