"""`eebert calibrate --token-exit`: the per-token exit's threshold, chosen by running that very pass.

Halted words keep serving as keys and values (``model/token_halt.py``), so the tokens still
running compute something no cached-state simulation reproduces: every candidate threshold in
``TOKEN_GRID`` is scored by running the per-token pass over the validation split, sentence by
sentence. Entity F1 is against the same reference as the per-sentence calibration (gold tags,
else the deployed tagger's; ``scoring/tagging.split_tags``), FLOPs are those the pass counted.
``--target-speedup``: the most accurate threshold reaching the FLOPs speedup; ``--max-drop``:
the fastest whose entity-F1 drop against the deployed tagger stays within the budget on a
bootstrap bound over sentences (the ``drop_confidence`` quantile of the drop across ``bootstrap``
resamples of the pass's per-sentence span counts), as the per-sentence calibration bounds it.
The choice goes into the artifact's calibration record as ``token_exit``, which
``predict --token-exit`` reads.
"""

from __future__ import annotations

import time

import torch

from ..core.errors import EebertError
from ..model.token_halt import TokenHaltTagger, check_layers
from ..tasks.entities import entity_scores, span_counts
from .tagging import f1_from_counts, split_tags

#: candidate tag probabilities a word needs to halt, each scored by a full per-token pass
TOKEN_GRID = (0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99, 0.995)


def tag_names(ids: list[int], n: int, id2label: dict) -> list[str]:
    """A sentence's tag names; words cut off at ``max_length`` (no tag id) count as ``O``."""
    return [id2label[i] for i in ids] + ["O"] * (n - len(ids))


def token_scores(outs: list, words: list[list[str]], reference: list[list[str]], id2label: dict,
                 full_flops: float) -> dict:
    """Entity F1, FLOPs speedup and mean halting layer of per-token outputs (``TokenHaltTagger.tag_one``'s)."""
    layers = [l for o in outs for l in o[2]]
    return {"entity_f1": entity_scores(reference, [tag_names(o[0], len(w), id2label) for o, w in zip(outs, words)])["f1"],
            "flops_x": full_flops / sum(o[3] for o in outs), "mean_word_layer": sum(layers) / max(len(layers), 1)}


def token_sweep(artifact, words: list[list[str]], reference: list[list[str]], full_flops: float,
                thresholds, criterion: str = "token-maxprob") -> list[dict]:
    """One per-token pass per threshold over ``words``: its scores (``token_scores``) and, under the
    key ``counts``, its per-sentence span counts ([S, 3], ``entities.span_counts``; for the bootstrap,
    not recorded)."""
    id2label = artifact.deployed.id2label
    points = []
    for thr in thresholds:
        halt = TokenHaltTagger(artifact, thr, criterion)
        outs = [halt.tag_one(w) for w in words]
        points.append({"threshold": thr, **token_scores(outs, words, reference, id2label, full_flops),
                       "counts": _counts(reference, [tag_names(o[0], len(w), id2label) for o, w in zip(outs, words)])})
    return points


def _counts(reference: list[list[str]], predicted: list[list[str]]) -> torch.Tensor:
    return torch.tensor(span_counts(reference, predicted), dtype=torch.float64).view(-1, 3)


def drop_bounds(points: list[dict], ref_counts: torch.Tensor, resamples: int, confidence: float,
                seed: int = 0) -> None:
    """Each point's ``drop_bound``: the ``confidence`` quantile, over bootstrap resamples of the sentences,
    of the reference tagger's entity F1 minus the point's (fractions, like ``entity_f1``)."""
    s = len(ref_counts)
    boot = torch.randint(s, (resamples, s), generator=torch.Generator().manual_seed(seed))
    weights = torch.zeros(resamples, s, dtype=torch.float64).scatter_add_(
        1, boot, torch.ones(resamples, s, dtype=torch.float64))  # how often each sentence is drawn
    ref = f1_from_counts(weights @ ref_counts)
    for p in points:
        p["drop_bound"] = torch.quantile(ref - f1_from_counts(weights @ p["counts"]), confidence).item()


def choose_token(points: list[dict], cfg, ref_f1: float) -> dict:
    """The point the budget picks; a budget no threshold meets is refused in one line."""
    if cfg.target_speedup is not None:
        ok = [p for p in points if p["flops_x"] >= cfg.target_speedup]
        if not ok:
            best = max(p["flops_x"] for p in points)
            raise EebertError(f"no per-token threshold reaches {cfg.target_speedup}x FLOPs on validation "
                              f"(the fastest, p >= {min(p['threshold'] for p in points)}, gives {best:.2f}x)",
                              f"ask for at most --target-speedup {best:.2f}")
        return max(ok, key=lambda p: (p["entity_f1"], p["flops_x"]))
    drops = [100 * p.get("drop_bound", ref_f1 - p["entity_f1"]) for p in points]  # bounded where measured
    ok = [p for p, d in zip(points, drops) if d <= cfg.max_drop]
    if not ok:
        least = min(drops)
        what = "on its bootstrap bound" if all("drop_bound" in p for p in points) else "on validation"
        raise EebertError(f"every per-token threshold loses more than {cfg.max_drop} entity-F1 points {what} "
                          f"(the least: {least:.2f})", f"allow at least --max-drop {least:.2f}, or use the "
                          "per-sentence exit (`eebert calibrate` without --token-exit)")
    return max(ok, key=lambda p: (p["flops_x"], p["entity_f1"]))


#: CalibrationConfig fields the per-token search does not read (their flags: the fields' own, ``flag_of``)
UNREAD = ("criterion_params", "unlabeled", "per_layer", "gate_thresholds", "prune_exits", "prune_within_noise",
          "tolerance", "precision", "cost", "latency_runtime")


def check_token_settings(cfg, metric: str | None, by: str) -> None:
    """Settings the per-token search has no use for are refused, not ignored (before anything loads): it reads
    the criterion (a per-token rule), the budget, ``bootstrap`` and ``drop_confidence``, and reports entity F1."""
    import dataclasses

    from ..core.checks import flag_of
    from ..criteria import CRITERIA
    from ..tasks import TOKEN_CLASSIFICATION, get as get_task

    default = type(cfg)()
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    for key in UNREAD:
        if getattr(cfg, key) != getattr(default, key):
            flag = flag_of(fields[key])
            name = f"{flag} (calibrate.{key})" if flag else f"calibrate.{key}"
            raise EebertError(f"{name} has no effect on the per-token exit's search ({by})", "drop it; the search "
                              "reads a per-token --criterion, --target-speedup or --max-drop, bootstrap and drop_confidence")
    if cfg.criterion != default.criterion and not CRITERIA.get(cfg.criterion).per_token:
        raise EebertError(f"--criterion {cfg.criterion} scores a sentence; the per-token exit ({by}) halts words by "
                          "a per-token rule", f"drop --criterion, or name one of: "
                          f"{', '.join(n for n in CRITERIA.names() if CRITERIA.get(n).per_token)}")
    get_task(TOKEN_CLASSIFICATION).choose_metric(metric)  # the taggers' headline only


def calibrate_token_exit(artifact, data, cfg, batch_size: int = 64) -> dict:
    """Choose the per-token threshold on validation and record it in the artifact's calibration."""
    if (cfg.target_speedup is None) == (cfg.max_drop is None):
        raise EebertError("give exactly one of --target-speedup and --max-drop", "for example --target-speedup 2")
    cal = artifact.calibration
    if cal is None:  # the record lives beside the per-sentence thresholds, which predict falls back to
        raise EebertError(f"{artifact.path} has no calibration.json yet",
                          f"run `eebert calibrate {artifact.path} --target-speedup X` first, then --token-exit")
    check_layers(artifact.deployed.adapter)
    t0 = time.perf_counter()
    st = split_tags(artifact, data, "validation", batch_size)  # the reference tags and the deployed FLOPs
    words = data.split("validation").texts
    reference = st.gold if st.labelled else st.names[-1]
    ref_f1 = entity_scores(reference, st.names[-1])["f1"]
    from ..criteria import CRITERIA

    rule = cfg.criterion if CRITERIA.get(cfg.criterion).per_token else "token-maxprob"
    points = token_sweep(artifact, words, reference, st.full.sum().item(), TOKEN_GRID, rule)
    if cfg.max_drop is not None:
        drop_bounds(points, _counts(reference, st.names[-1]), cfg.bootstrap, cfg.drop_confidence)
    best = choose_token(points, cfg, ref_f1)
    for p in points:
        del p["counts"]
    record = {"mode": "per-token", "criterion": rule, "threshold": best["threshold"],
              "budget": "target_speedup" if cfg.target_speedup is not None else "max_drop",
              "target_speedup": cfg.target_speedup, "max_drop": cfg.max_drop,
              "validation": {"entity_f1": best["entity_f1"], "speedup_flops": best["flops_x"],
                             "mean_word_layer": best["mean_word_layer"], "reference_entity_f1": ref_f1,
                             "reference": "gold" if st.labelled else "deployed", "examples": len(words)},
              "margin": (f"bootstrap over sentences ({cfg.bootstrap} resamples), {cfg.drop_confidence} quantile of "
                         "the entity-F1 drop" if cfg.max_drop is not None else "none (a speedup target)"),
              "curve": points, "search_seconds": round(time.perf_counter() - t0, 2)}
    cal.token_exit = record
    cal.save(artifact.path)
    return record
