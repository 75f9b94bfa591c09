"""Debate on scikit-learn's 8x8 digits: Irving, Christiano & Amodei (2018), "AI safety via debate", §3.1.

A *judge* classifies a digit from only ``k`` revealed pixels. It is trained on ``k`` random
non-black pixels, drawn afresh at every presentation (as Irving et al.'s sparse MNIST classifier
was). In a debate two players see the whole image and pre-commit to labels — the honest one to the
true label, the liar to a wrong one — then take turns revealing one non-black pixel each until
``k`` are shown. The honest player wins when the judge's logit for the true label exceeds the
liar's. Each image is debated once against every wrong label and counts as correct only if the
honest player wins all nine (the paper's "the liar wins if any liar wins").

Players choose pixels greedily (the pixel that most raises their own label's logit over the
opponent's) or by a budgeted minimax tree search (each node expands its ``branch`` greedily best
pixels, the last reveal is the exact best reply over every pixel). Irving et al. ran Monte Carlo
tree search with 10,000 rollouts per move; the budgeted minimax is the cheap stand-in, and with
both players searching the same tree, the played game is that tree's principal variation.

The judge is a one-hidden-layer MLP (scikit-learn). Its first layer is linear in the revealed
pixels, so revealing pixel ``p`` adds a fixed vector to the hidden pre-activation: every candidate
reveal costs one add, one ReLU and the output layer, which is what makes exhaustive per-move search
affordable on a CPU.

Example:
    >>> images, labels = load_digits_data()
    >>> judge = train_judge(images[:1200], labels[:1200], pixels=6, seed=0)
    >>> margins = play_debates(judge, images[1200:], labels[1200:], (labels[1200:] + 1) % 10)
    >>> float((margins > 0).mean())  # honest win rate against the "+1" liar  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from alignlab._validate import check_choice, check_int, raise_problems
from alignlab.errors import ConfigError

N_PIXELS = 64
N_CLASSES = 10
MAX_VALUE = 16.0  # sklearn's digits are 4-bit grey levels, 0..16
Policy = Literal["random", "greedy", "search"]
POLICIES: tuple[str, ...] = ("random", "greedy", "search")
# Candidate reveals scored at once: ~16M float32 (64 MB) of hidden activations per chunk.
_CHUNK_FLOATS = 1 << 24

Array = NDArray[np.float64]
Mask = NDArray[np.bool_]


def load_digits_data() -> tuple[Array, NDArray[np.int64]]:
    """The 1,797 bundled 8x8 digits as ``(images [n, 64] in 0..16, labels [n])``."""
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    return images.astype(np.float64), labels.astype(np.int64)


def random_masks(images: Array, pixels: int, rng: np.random.Generator) -> Mask:
    """``pixels`` distinct non-black pixels per image, uniformly at random (all of them if fewer)."""
    nonzero = images > 0
    # Black pixels sort after every non-black one, so the first `pixels` keys are non-black.
    keys = rng.random(images.shape) + 2.0 * ~nonzero
    chosen = np.argsort(keys, axis=1)[:, :pixels]
    masks = np.zeros(images.shape, dtype=bool)
    np.put_along_axis(masks, chosen, True, axis=1)
    return masks & nonzero


def judge_features(images: Array, masks: Mask) -> NDArray[np.float32]:
    """What the judge sees: which pixels are revealed, and their grey levels scaled to [0, 1]."""
    return np.concatenate([masks, masks * images / MAX_VALUE], axis=1).astype(np.float32)


@dataclass(frozen=True)
class SparseJudge:
    """A trained judge: a one-hidden-layer ReLU MLP over `judge_features`.

    Attributes:
        w1: ``[128, hidden]`` first-layer weights (64 reveal indicators, then 64 grey levels).
        b1: ``[hidden]`` first-layer bias.
        w2: ``[hidden, 10]`` output weights.
        b2: ``[10]`` output bias.
        pixels: how many revealed pixels it was trained on.
    """

    w1: NDArray[np.float32]
    b1: NDArray[np.float32]
    w2: NDArray[np.float32]
    b2: NDArray[np.float32]
    pixels: int

    def logits(self, images: Array, masks: Mask) -> NDArray[np.float32]:
        """Class logits ``[n, 10]`` of the judge shown ``masks`` of ``images``."""
        return self._head(self._empty(len(images)) + self._reveal_sum(images, masks))

    def predict(self, images: Array, masks: Mask) -> NDArray[np.int64]:
        """The judge's label for each image."""
        return np.asarray(self.logits(images, masks).argmax(axis=1), dtype=np.int64)

    def _empty(self, n: int) -> NDArray[np.float32]:
        return np.broadcast_to(self.b1, (n, self.b1.size)).copy()

    def _deltas(self, images: Array) -> NDArray[np.float32]:
        """``[n, 64, hidden]``: what revealing each pixel adds to the hidden pre-activation."""
        scaled = (images / MAX_VALUE).astype(np.float32)
        return self.w1[None, :N_PIXELS, :] + scaled[:, :, None] * self.w1[None, N_PIXELS:, :]

    def _reveal_sum(self, images: Array, masks: Mask) -> NDArray[np.float32]:
        return np.asarray(judge_features(images, masks) @ self.w1, dtype=np.float32)

    def _head(self, pre: NDArray[np.float32]) -> NDArray[np.float32]:
        return np.asarray(np.maximum(pre, 0.0) @ self.w2 + self.b2, dtype=np.float32)


def train_judge(
    images: Array,
    labels: NDArray[np.int64],
    pixels: int,
    seed: int,
    *,
    hidden: int = 128,
    epochs: int = 40,
    masks_per_image: int = 8,
) -> SparseJudge:
    """Train the judge on ``pixels`` random non-black pixels, drawn afresh every epoch.

    Args:
        images: ``[n, 64]`` training images.
        labels: ``[n]`` their digits.
        pixels: revealed pixels per presentation (Irving et al.: 4 or 6).
        seed: seeds the masks and the MLP's initialisation.
        hidden: hidden units.
        epochs: passes, each over ``masks_per_image`` fresh masks of every image.
        masks_per_image: masks per image per epoch.

    Returns:
        The judge. On 1,198 training digits (hidden 128, 40 epochs) it reached 0.48 accuracy on
        held-out digits at 4 pixels and 0.58 at 6 (measured), next to Irving et al.'s 0.482 and
        0.594 on MNIST.
    """
    from sklearn.neural_network import MLPClassifier

    raise_problems(
        "train_judge",
        [
            check_int("pixels", pixels, lo=1, hi=N_PIXELS),
            check_int("hidden", hidden, lo=1, hi=65536),
            check_int("epochs", epochs, lo=1, hi=100_000),
            check_int("masks_per_image", masks_per_image, lo=1, hi=10_000),
        ],
    )
    rng = np.random.default_rng([seed, pixels])
    clf = MLPClassifier(
        hidden_layer_sizes=(hidden,), batch_size=256, learning_rate_init=1e-3, random_state=seed
    )
    rows = np.repeat(np.arange(len(images)), masks_per_image)
    for _ in range(epochs):
        x = judge_features(images[rows], random_masks(images[rows], pixels, rng))
        clf.partial_fit(x, labels[rows], classes=np.arange(N_CLASSES))
    (w1, w2), (b1, b2) = clf.coefs_, clf.intercepts_
    f32 = np.float32
    return SparseJudge(w1.astype(f32), b1.astype(f32), w2.astype(f32), b2.astype(f32), pixels)


def play_debates(
    judge: SparseJudge,
    images: Array,
    honest: NDArray[np.int64],
    liar: NDArray[np.int64],
    *,
    honest_policy: Policy = "greedy",
    liar_policy: Policy = "greedy",
    first: Literal["honest", "liar"] = "honest",
    branch: int = 3,
    seed: int = 0,
) -> NDArray[np.float32]:
    """Play one debate per row and return the judge's final margin (honest logit - liar logit).

    Args:
        judge: the judge; each debate reveals ``judge.pixels`` pixels in all.
        images: ``[n, 64]`` the images, seen in full by both players.
        honest: ``[n]`` the honest player's label (the truth).
        liar: ``[n]`` the liar's pre-committed label (must differ from ``honest``).
        honest_policy: "random", "greedy" or "search".
        liar_policy: the same; "search" must be used by both players or neither (minimax over
            one shared tree).
        first: who reveals the first pixel.
        branch: pixels expanded per node of the tree search (all but the last reveal).
        seed: seeds the random policy.

    Returns:
        ``[n]`` margins; the honest player wins a debate where the margin is > 0.

    Raises:
        ConfigError: unknown policy, one-sided search, a liar label equal to the honest one,
            or ``branch`` < 1.
    """
    raise_problems(
        "play_debates",
        [
            check_choice("honest_policy", honest_policy, POLICIES),
            check_choice("liar_policy", liar_policy, POLICIES),
            check_choice("first", first, ("honest", "liar")),
            check_int("branch", branch, lo=1, hi=N_PIXELS),
        ],
    )
    if (honest_policy == "search") != (liar_policy == "search"):
        raise ConfigError("play_debates: 'search' must be the policy of both players or of neither")
    if np.any(honest == liar):
        raise ConfigError("play_debates: every liar label must differ from the honest label")
    if np.any((images > 0).sum(axis=1) < judge.pixels):
        raise ConfigError(f"play_debates: every image needs at least {judge.pixels} non-black pixels")
    if honest_policy == "search":
        return _minimax(judge, images, honest, liar, first, branch)
    return _play_moves(judge, images, honest, liar, (honest_policy, liar_policy), first, seed)


def _movers(pixels: int, first: str) -> list[int]:
    """+1 where the honest player reveals, -1 where the liar does, ply by ply."""
    sign = 1 if first == "honest" else -1
    return [sign * (1 if ply % 2 == 0 else -1) for ply in range(pixels)]


def _child_margins(
    judge: SparseJudge,
    pre: NDArray[np.float32],
    deltas: NDArray[np.float32],
    pair: NDArray[np.int64],
) -> NDArray[np.float32]:
    """``[m, 64]`` honest-minus-liar margin after revealing each pixel, for ``m`` states.

    ``pre``: ``[m, hidden]`` pre-activations; ``deltas``: ``[m, 64, hidden]``; ``pair``: ``[m, 2]``
    (honest label, liar label).
    """
    m, hidden = pre.shape
    out = np.empty((m, N_PIXELS), dtype=np.float32)
    step = max(1, _CHUNK_FLOATS // (N_PIXELS * hidden))
    # Only the two committed labels' logits matter: project the output layer on their difference.
    w = judge.w2[:, pair[:, 0]] - judge.w2[:, pair[:, 1]]  # [hidden, m]
    b = judge.b2[pair[:, 0]] - judge.b2[pair[:, 1]]
    for lo in range(0, m, step):
        hi = min(m, lo + step)
        act = np.maximum(pre[lo:hi, None, :] + deltas[lo:hi], 0.0)
        out[lo:hi] = np.einsum("mph,hm->mp", act, w[:, lo:hi], optimize=True) + b[lo:hi, None]
    return out


def _play_moves(
    judge: SparseJudge,
    images: Array,
    honest: NDArray[np.int64],
    liar: NDArray[np.int64],
    policies: tuple[str, str],
    first: str,
    seed: int,
) -> NDArray[np.float32]:
    """Move-by-move play with greedy or random players."""
    n = len(images)
    rng = np.random.default_rng(seed)
    deltas = judge._deltas(images)
    pair = np.stack([honest, liar], axis=1)
    pre = judge._empty(n)
    available = images > 0
    rows = np.arange(n)
    for mover in _movers(judge.pixels, first):
        policy = policies[0] if mover > 0 else policies[1]
        if policy == "random":
            score = rng.random((n, N_PIXELS)).astype(np.float32)
        else:
            score = mover * _child_margins(judge, pre, deltas, pair)
        score = np.where(available, score, -np.inf)
        choice = score.argmax(axis=1)
        pre = pre + deltas[rows, choice]
        available[rows, choice] = False
    diff = judge._head(pre)
    return np.asarray(diff[rows, honest] - diff[rows, liar], dtype=np.float32)


def _minimax(
    judge: SparseJudge,
    images: Array,
    honest: NDArray[np.int64],
    liar: NDArray[np.int64],
    first: str,
    branch: int,
) -> NDArray[np.float32]:
    """Budgeted minimax: ``branch`` greedy-best reveals per node, exact best last reveal."""
    n, hidden = len(images), judge.b1.size
    movers = _movers(judge.pixels, first)
    # Debates per chunk so that the deepest level's candidate scores fit in _CHUNK_FLOATS.
    leaves = branch ** max(0, len(movers) - 1)
    per_chunk = max(1, _CHUNK_FLOATS // (leaves * N_PIXELS * hidden))
    out = np.empty(n, dtype=np.float32)
    for lo in range(0, n, per_chunk):
        sl = slice(lo, min(n, lo + per_chunk))
        out[sl] = _minimax_chunk(judge, images[sl], honest[sl], liar[sl], movers, branch)
    return out


def _minimax_chunk(
    judge: SparseJudge,
    images: Array,
    honest: NDArray[np.int64],
    liar: NDArray[np.int64],
    movers: list[int],
    branch: int,
) -> NDArray[np.float32]:
    n = len(images)
    deltas0 = judge._deltas(images)
    pair0 = np.stack([honest, liar], axis=1)
    # Tree states, flattened level by level: state s of level d belongs to debate s // branch**d.
    owner = np.arange(n)
    pre = judge._empty(n)
    available = images > 0
    # A state is invalid when its node had fewer than `branch` pixels left to reveal.
    valid = np.ones(n, dtype=bool)
    valid_by_level = []
    for mover in movers[:-1]:
        score = mover * _child_margins(judge, pre, deltas0[owner], pair0[owner])
        score = np.where(available, score, -np.inf)
        # The `branch` best reveals of each state (stable order, so ties break by pixel index).
        top = np.argsort(-score, axis=1, kind="stable")[:, :branch]
        parent = np.repeat(np.arange(len(pre)), branch)
        choice = top.reshape(-1)
        valid = valid[parent] & np.isfinite(score[parent, choice])
        valid_by_level.append(valid)
        owner = owner[parent]
        pre = pre[parent] + deltas0[owner, choice]
        available = available[parent]
        available[np.arange(len(choice)), choice] = False
    last = movers[-1] * _child_margins(judge, pre, deltas0[owner], pair0[owner])
    value = movers[-1] * np.where(available, last, -np.inf).max(axis=1)
    # Back up: at each level the mover takes its best valid child (max for honest, min for liar).
    for mover, ok in zip(reversed(movers[:-1]), reversed(valid_by_level), strict=True):
        children = np.where(ok, value, -mover * np.inf).reshape(-1, branch)
        value = children.max(axis=1) if mover > 0 else children.min(axis=1)
    return np.asarray(value, dtype=np.float32)


def debate_all_liars(
    judge: SparseJudge,
    images: Array,
    labels: NDArray[np.int64],
    *,
    policy: Policy = "greedy",
    liar_policy: Policy | None = None,
    first: Literal["honest", "liar"] = "honest",
    branch: int = 3,
    seed: int = 0,
) -> Mask:
    """``[n, 9]``: whether the honest player beat the liar committed to each wrong label.

    An image counts as judged correctly by debate when its whole row is True (Irving et al.: the
    liar wins if any of the nine liars wins). ``liar_policy`` defaults to ``policy``.
    """
    n = len(images)
    offsets = np.arange(1, N_CLASSES)
    liars = (labels[:, None] + offsets[None, :]) % N_CLASSES  # every wrong label, in a fixed order
    margins = play_debates(
        judge,
        np.repeat(images, len(offsets), axis=0),
        np.repeat(labels, len(offsets)),
        liars.reshape(-1),
        honest_policy=policy,
        liar_policy=liar_policy or policy,
        first=first,
        branch=branch,
        seed=seed,
    )
    return np.asarray(margins.reshape(n, len(offsets)) > 0)


def random_pixel_correct(judge: SparseJudge, images: Array, labels: NDArray[np.int64], seed: int) -> Mask:
    """``[n]``: whether the judge names the right digit (of 10) from ``judge.pixels`` random
    non-black pixels — the no-debate baseline (Irving et al.'s 59.4% at 6 pixels)."""
    masks = random_masks(images, judge.pixels, np.random.default_rng([seed, judge.pixels, 1]))
    return np.asarray(judge.predict(images, masks) == labels)


@dataclass(frozen=True)
class DigitsDebateConfig:
    """One cell of the digits debate: a judge of ``pixels`` pixels and the debates it judges.

    Attributes:
        pixels: revealed pixels per judgement (Irving et al.: 4 and 6).
        test_fraction: share of the 1,797 digits held out from the judge and debated.
        hidden: judge hidden units.
        epochs: judge training epochs (fresh random masks each).
        masks_per_image: masks per training image per epoch.
        branch: pixels expanded per tree-search node.
        n_search: test images debated by tree search (the costliest policy); 0 = all of them.
    """

    pixels: int = 6
    test_fraction: float = 1 / 3
    hidden: int = 128
    epochs: int = 40
    masks_per_image: int = 8
    branch: int = 3
    n_search: int = 200

    def __post_init__(self) -> None:
        from alignlab._validate import check_real

        raise_problems(
            "DigitsDebateConfig",
            [
                check_int("pixels", self.pixels, lo=1, hi=16),
                check_real("test_fraction", self.test_fraction, lo=0.05, hi=0.95),
                check_int("hidden", self.hidden, lo=1, hi=65536),
                check_int("epochs", self.epochs, lo=1, hi=100_000),
                check_int("masks_per_image", self.masks_per_image, lo=1, hi=10_000),
                check_int("branch", self.branch, lo=1, hi=N_PIXELS),
                check_int("n_search", self.n_search, lo=0, hi=10_000),
            ],
        )


# Debate conditions measured per cell: (name, honest policy, liar policy, who reveals first).
DEBATE_CONDITIONS: tuple[tuple[str, Policy, Policy, Literal["honest", "liar"]], ...] = (
    ("greedy, honest first", "greedy", "greedy", "honest"),
    ("greedy, liar first", "greedy", "greedy", "liar"),
    ("search, honest first", "search", "search", "honest"),
    ("greedy vs random liar", "greedy", "random", "honest"),
)


def measure_digits_debate(cfg: DigitsDebateConfig, seed: int) -> dict[str, Any]:
    """Train a judge on a seeded split and count its accuracy without and with debate.

    The seed draws the stratified train/test split, the judge's masks and initialisation, and
    the random baseline's pixels.

    Returns:
        JSON-able counts: ``{"pixels", "seed", "n_test", "random": {"correct", "n"},
        "debate": {condition: {"correct", "n", "won", "debates"}}}``, where ``correct`` counts
        images whose honest player beat all nine liars and ``won`` counts single debates won.
    """
    from sklearn.model_selection import train_test_split

    images, labels = load_digits_data()
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=cfg.test_fraction, stratify=labels, random_state=seed
    )
    judge = train_judge(
        train_x, train_y, cfg.pixels, seed,
        hidden=cfg.hidden, epochs=cfg.epochs, masks_per_image=cfg.masks_per_image,
    )  # fmt: skip
    baseline = random_pixel_correct(judge, test_x, test_y, seed)
    debate: dict[str, dict[str, int]] = {}
    for name, honest_policy, liar_policy, first in DEBATE_CONDITIONS:
        n = cfg.n_search if honest_policy == "search" and cfg.n_search else len(test_x)
        wins = debate_all_liars(
            judge, test_x[:n], test_y[:n],
            policy=honest_policy, liar_policy=liar_policy, first=first, branch=cfg.branch, seed=seed,
        )  # fmt: skip
        debate[name] = {
            "correct": int(wins.all(axis=1).sum()),
            "n": int(n),
            "won": int(wins.sum()),
            "debates": int(wins.size),
        }
    return {
        "pixels": cfg.pixels,
        "seed": seed,
        "n_test": len(test_x),
        "random": {"correct": int(baseline.sum()), "n": len(test_x)},
        "debate": debate,
    }
