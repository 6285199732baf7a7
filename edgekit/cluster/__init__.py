"""A board farm on Ray: workers that advertise their Jetson profile, and the desk side that sends build / profile / optimise tasks to them (ray is imported lazily)."""
