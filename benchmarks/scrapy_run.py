"""Scrapy on the benchmark web, configured the way Scrapy's "Broad Crawls" page advises.

One spider, links found with ``LinkExtractor`` and followed with ``response.follow`` (what Scrapy
users write), Scrapy's own dedup filter, one item per page written by a JSON-lines feed.
Concurrency and the per-host limit are the same as the other runners'.
"""

from __future__ import annotations

import os

import scrapy
from scrapy.crawler import CrawlerProcess
from scrapy.linkextractors import LinkExtractor

from benchmarks.args import runner_arguments


class BenchSpider(scrapy.Spider):
    name = "bench"

    def __init__(self, seed: str, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.start_urls = [seed]
        self.links = LinkExtractor()

    def parse(self, response):  # type: ignore[no-untyped-def]
        yield {"url": response.url, "status": response.status,
               "depth": response.meta.get("depth", 0)}
        for link in self.links.extract_links(response):
            yield response.follow(link, callback=self.parse)


def main(argv: list[str] | None = None) -> None:
    args = runner_arguments(__doc__.split("\n\n")[0], argv)
    os.makedirs(args.out, exist_ok=True)
    process = CrawlerProcess(settings={
        # The "Broad Crawls" recommendations
        "SCHEDULER_PRIORITY_QUEUE": "scrapy.pqueues.DownloaderAwarePriorityQueue",
        "CONCURRENT_REQUESTS": args.concurrency,
        "CONCURRENT_REQUESTS_PER_DOMAIN": args.per_host,
        "REACTOR_THREADPOOL_MAXSIZE": 20,
        "LOG_LEVEL": "INFO",
        "COOKIES_ENABLED": False,
        "RETRY_ENABLED": False,
        "DOWNLOAD_TIMEOUT": 15,
        # The same workload as the other runners
        "ROBOTSTXT_OBEY": False,
        "DOWNLOAD_DELAY": 0,
        "DEPTH_PRIORITY": 1,  # breadth first, like raycrawl's bfs
        "SCHEDULER_DISK_QUEUE": "scrapy.squeues.PickleFifoDiskQueue",
        "SCHEDULER_MEMORY_QUEUE": "scrapy.squeues.FifoMemoryQueue",
        "TELNETCONSOLE_ENABLED": False,
        "FEEDS": {os.path.join(args.out, "pages.jsonl"): {"format": "jsonlines"}},
    })
    process.crawl(BenchSpider, seed=args.seed)
    process.start()


if __name__ == "__main__":
    main()
