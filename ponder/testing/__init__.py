"""Test support that ships with Ponder: fake models, the network guard, the stand-in server.

* :class:`FakeModel`: a :class:`ponder.Model` answering from a script or a function.
* :func:`block_remote_models`: makes any request to a non-loopback model server fail.
* :class:`StandinServer` / :class:`StandinConfig`: a local vLLM-like server with an oracle
  (see :mod:`ponder.testing.oracle` for its protocol).
"""

from ponder.testing._fake import FakeCall, FakeModel, block_remote_models
from ponder.testing.oracle import OracleConfig, ProblemBank, majority_vote_accuracy
from ponder.testing.server import StandinConfig, StandinServer, StandinStats

__all__ = [
    "FakeCall",
    "FakeModel",
    "OracleConfig",
    "ProblemBank",
    "StandinConfig",
    "StandinServer",
    "StandinStats",
    "block_remote_models",
    "majority_vote_accuracy",
]
