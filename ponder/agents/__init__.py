"""Reasoning components over a typed candidate pool (see docs/agents.md).

>>> from ponder.agents import Generate, Pool, Vote
>>> pool = await Generate(model)(Pool(query="What is 17 * 23?"))  # doctest: +SKIP
>>> pool = await Vote()(pool)                                        # doctest: +SKIP
>>> pool.final                                                       # doctest: +SKIP
"""

from ponder.agents._answers import (
    AnswerKind,
    answers_equivalent,
    extract_answer,
    normalize_answer,
)
from ponder.agents._code import RunTests, RunTestsConfig, WriteTests, WriteTestsConfig, split_tests
from ponder.agents._components import (
    COMPONENTS,
    AdaptiveVote,
    AdaptiveVoteConfig,
    BestOfN,
    BestOfNConfig,
    Component,
    Critic,
    Fuser,
    FuserConfig,
    Generate,
    GenerateConfig,
    JudgeConfig,
    ModelVerifier,
    ProgrammaticVerifier,
    Ranker,
    RankerConfig,
    Refine,
    RefineConfig,
    VerifierConfig,
    Vote,
    VoteConfig,
    get_component,
    parse_critiques,
    parse_ranking,
    parse_verdict,
    register_component,
)
from ponder.agents._state import Candidate, Pool, Provenance, Spend
from ponder.agents._vote import VoteResult, leader_settled_probability, vote

__all__ = [
    "COMPONENTS",
    "AdaptiveVote",
    "AdaptiveVoteConfig",
    "AnswerKind",
    "BestOfN",
    "BestOfNConfig",
    "Candidate",
    "Component",
    "Critic",
    "Fuser",
    "FuserConfig",
    "Generate",
    "GenerateConfig",
    "JudgeConfig",
    "ModelVerifier",
    "Pool",
    "ProgrammaticVerifier",
    "Provenance",
    "Ranker",
    "RankerConfig",
    "Refine",
    "RefineConfig",
    "RunTests",
    "RunTestsConfig",
    "Spend",
    "VerifierConfig",
    "Vote",
    "VoteConfig",
    "VoteResult",
    "WriteTests",
    "WriteTestsConfig",
    "answers_equivalent",
    "extract_answer",
    "get_component",
    "leader_settled_probability",
    "normalize_answer",
    "parse_critiques",
    "parse_ranking",
    "parse_verdict",
    "register_component",
    "split_tests",
    "vote",
]
