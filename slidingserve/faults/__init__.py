"""Reliability scenarios: overload, replica and predictor failure, bad input, security.

``slidingserve bench faults --out DIR`` runs them against a local Ray Serve application (CPU
replicas of the tiny model) and writes ``DIR/faults.json``. Every scenario answers the same
question first: of the requests it sent, how many got an answer (served, 429 or an explicit
error) and how many were lost (no answer in time, a dropped connection, a stream that stopped
without ``[DONE]`` or an error event, or a 5xx without a message).
"""
