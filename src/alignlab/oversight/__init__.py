"""Scalable oversight: debate (Irving et al. 2018) and weak-to-strong generalisation (Burns et al. 2023)."""

from alignlab.oversight.debate_digits import (
    DEBATE_CONDITIONS,
    DigitsDebateConfig,
    SparseJudge,
    debate_all_liars,
    load_digits_data,
    measure_digits_debate,
    play_debates,
    random_masks,
    random_pixel_correct,
    train_judge,
)

__all__ = [
    "DEBATE_CONDITIONS",
    "DigitsDebateConfig",
    "SparseJudge",
    "debate_all_liars",
    "load_digits_data",
    "measure_digits_debate",
    "play_debates",
    "random_masks",
    "random_pixel_correct",
    "train_judge",
]
