"""The Ray side of raycrawl: coordinator, strategy and DB workers, fetch tasks, handles."""
