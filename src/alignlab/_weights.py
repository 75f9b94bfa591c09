"""The check every weight loader runs: floating-point dtypes only, finite values unless allowed.

An integer or boolean tensor where a weight belongs is a file someone else wrote wrongly (a
quantised export, a mask saved under a weight's name); casting it silently gives a model that runs
and means nothing. Non-finite weights make every output NaN, which surfaces far from the cause.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from alignlab.errors import WeightsError


def check_weights(tensors: Mapping[str, torch.Tensor], where: str, *, allow_nonfinite: bool = False) -> None:
    """Raise `WeightsError` naming the first tensor that is not floating point or not finite.

    Args:
        tensors: name -> tensor, as stored (the names the user can find in the file).
        where: the file or directory, for the message.
        allow_nonfinite: accept NaN and infinite values (e.g. to inspect a diverged run).
    """
    for name, t in tensors.items():
        if not t.is_floating_point():
            raise WeightsError(
                f"{where}: tensor {name!r} has dtype {str(t.dtype).removeprefix('torch.')}, not a "
                "floating-point type; alignlab does not cast integer or boolean weights "
                "(re-export the model in float32, bfloat16 or float16)"
            )
        if not allow_nonfinite:
            bad = int(t.numel() - torch.isfinite(t).sum())
            if bad:
                raise WeightsError(
                    f"{where}: tensor {name!r} holds {bad} non-finite value(s) (NaN or inf) of "
                    f"{t.numel()}; pass allow_nonfinite=True to load it anyway"
                )
