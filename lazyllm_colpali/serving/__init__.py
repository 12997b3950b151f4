"""HTTP serving: a JSON search endpoint (and background ingestion) over one ColPali index."""
