"""Search: the LanceDB index of captions and summaries, and questions answered with cited moments."""
