"""The Ray side of raycrawl: coordinator, strategy and DB workers, fetch workers, handles."""
