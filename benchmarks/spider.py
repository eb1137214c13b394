"""The spiders of the benchmark's spider runs; both yield one item per page and follow every
link (``follow_links``).

``BenchSpider`` takes its item from the response as fetched (what the spider machinery costs:
the callback's thread, the item's trip to the DB worker, ``OUT/items``); ``CssSpider`` reads
the title through parsel's selectors, so each page is also parsed by lxml — the cost of a
spider that reads its pages, which is the user's code's.
"""

import raycrawl


class BenchSpider(raycrawl.Spider):
    follow_links = True

    def parse(self, response):
        yield {"status": response.status, "bytes": len(response.body), "depth": response.depth}


class CssSpider(raycrawl.Spider):
    follow_links = True

    def parse(self, response):
        yield {"title": response.css("title::text").get(), "status": response.status}
