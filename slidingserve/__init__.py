"""SlidingServe: SLO-aware scheduling for online LLM inference."""

__version__ = "0.1.0"
