"""Built-in crawling strategies, loaded by name: ``bfs`` (default) and ``dfs``."""
