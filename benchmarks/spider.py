"""The spider of the benchmark's spider run: one item per page (its title, through parsel's
selectors, as a real spider reads a page) and every link followed (``follow_links``)."""

import raycrawl


class BenchSpider(raycrawl.Spider):
    follow_links = True

    def parse(self, response):
        yield {"title": response.css("title::text").get(), "status": response.status}
