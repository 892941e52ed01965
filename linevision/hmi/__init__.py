"""The operator page: a read-only web feed of the verdict bus."""
