"""A two-callback spider for raycrawl's synthetic web (``raycrawl synthweb``).

From the seed page it follows every link to ``parse_page``; from every other page, only the
first link (the host's next page).  Each page gives one item.  Run it with::

    raycrawl synthweb --hosts 12 --pages 40 &          # prints the seed URL
    raycrawl crawl SEED --spider examples/synthweb_spider.py:SynthSpider --out out \\
        --allow-network 127.0.0.0/8 --delay 0
"""

import raycrawl


class SynthSpider(raycrawl.Spider):
    def parse(self, response):
        """The seed: an item for it, then every link of the page."""
        yield {"title": response.css("title::text").get(), "kind": "seed",
               "links": len(response.css("li a"))}
        for link in response.css("li a"):
            yield response.follow(link, callback=self.parse_page, meta={"from": response.url})

    def parse_page(self, response):
        """Any other page: its title, where the crawl came from, then the next page only."""
        yield {"title": response.css("title::text").get(), "kind": "page",
               "from": response.meta.get("from"), "depth": response.depth}
        first = response.css("li a::attr(href)").get()
        if first is not None:
            yield response.follow(first, callback="parse_page", meta=response.meta)
