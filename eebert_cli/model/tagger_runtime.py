"""Per-sentence early exit at inference for taggers, and what ``predict`` returns for them.

The backbone runs layer by layer; at each exit every sentence still in the batch is
tagged and scored by the calibrated criterion (the same arithmetic calibration used on
cached states); sentences that are confident enough leave with those tags and the rest
run on, as sentence exits do. Raw text is split into words the way the checkpoint's
tokenizer pre-splits it (whitespace and punctuation for BERT's), keeping each word's
character offsets, so entity spans point into the input text.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from .artifact import Artifact, load_artifact
from .calibration import skipped_exits, thresholds_from_json
from ..criteria import build_criterion
from .device import module_device
from ..core.errors import EebertError
from ..data.tagging import encode
from ..tasks.entities import spans
from .token_features import tag_logits

_WORD = re.compile(r"\w+|[^\w\s]")


def split_words(tokenizer, text: str) -> list[tuple[str, int, int]]:
    """(word, start, end) as the tokenizer's pre-tokenizer splits ``text`` (a regex where it has none)."""
    pre = getattr(getattr(tokenizer, "backend_tokenizer", None), "pre_tokenizer", None)
    if pre is not None:
        return [(w, a, b) for w, (a, b) in pre.pre_tokenize_str(text)]
    return [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]


def artifact_task(artifact: "str | Path | Artifact"):
    """The artifact's task, read from its config (nothing else loads; no config: the default task)."""
    from .artifact import CONFIG, check_config
    from ..core.atomic import read_json
    from ..tasks import get as get_task

    path = None if isinstance(artifact, Artifact) else Path(artifact) / CONFIG
    config = artifact.config if path is None else (check_config(read_json(path), path) if path.is_file() else {})
    return get_task(config.get("task"))


def tagger_task(artifact: "str | Path | Artifact"):
    """The artifact's task when it tags tokens, else None (read from its config; nothing else loads)."""
    task = artifact_task(artifact)
    return task if task.level == "token" else None


def sentences_leaving(criterion, logits: torch.Tensor, first: torch.Tensor, threshold: float) -> torch.Tensor:
    """[B] bool (on the CPU): which sentences leave at an exit with per-token ``logits`` [B, T, C].

    Positions without a tag (``first`` < 0: special tokens, later subwords, padding) are NaN,
    which the sentence criteria do not read; every runtime decides with this one function."""
    scored = logits.masked_fill((first < 0).to(logits.device)[..., None], float("nan"))
    score, _ = criterion.step(scored, {})
    return (score <= threshold).cpu()


class Tagger:
    """A calibrated tagging artifact, ready to tag."""

    #: whether it runs the artifact's PyTorch backbone (the ONNX tagger runs graphs, see ``Runtime.runs_backbone``)
    runs_backbone = True

    def __init__(self, artifact: Artifact):
        cal = artifact.calibration
        if cal is None:
            raise EebertError(f"{artifact.path} is not calibrated yet",
                              f"run `eebert calibrate {artifact.path} --target-speedup 2.0`")
        from .quantize import as_calibrated

        if self.runs_backbone:
            as_calibrated(artifact)  # thresholds calibrated on a quantized backbone: run the same
        self.artifact, self.deployed, self.exits = artifact, artifact.deployed, artifact.exits
        self.adapter = self.deployed.adapter
        self.criterion = build_criterion(cal.criterion, cal.criterion_params, artifact)
        self.thresholds = thresholds_from_json(cal.thresholds)
        self.max_length = artifact.config["max_length"]
        self.num_layers = self.adapter.dims.num_layers

    @property
    def input_device(self) -> torch.device:
        """Where token ids go: the backbone's device."""
        return module_device(self.adapter.model)

    @classmethod
    def from_artifact(cls, path: str | Path, backbone: str | None = None) -> "Tagger":
        return cls(load_artifact(path, backbone))

    @torch.inference_mode()
    def tag_words(self, words: list[list[str]], batch_size: int = 32, exit_at: int | None = None):
        """Per sentence: (tag ids per tagged word, top probability per tagged word, exit layer).

        ``exit_at``: force every sentence out at exit index ``exit_at`` (static truncation; the
        deployed tagger is the last index), for the benchmark and tests.
        """
        out: list = [None] * len(words)
        for b in range(0, len(words), batch_size):
            chunk = words[b:b + batch_size]
            enc = encode(self.deployed.tokenizer, chunk, self.max_length)
            self._run(*self._inputs(enc["input_ids"], enc["word_index"]), list(range(b, b + len(chunk))), out, exit_at)
        return out

    def _padded(self, input_ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoded sentences -> right-padded ids and their mask [B, T], on the input device."""
        device, width = self.input_device, max(map(len, input_ids))
        pad = self.deployed.tokenizer.pad_token_id or 0
        ids = torch.tensor([x + [pad] * (width - len(x)) for x in input_ids], device=device)
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in input_ids], device=device)
        return ids, mask

    def _inputs(self, input_ids: list[list[int]], word_index: list[list[int]]):
        """Encoded sentences -> padded ids, mask (on the input device) and each position's word [B, T] (-1: none)."""
        ids, mask = self._padded(input_ids)
        first = torch.full(ids.shape, -1, dtype=torch.long)
        for r, wi in enumerate(word_index):
            first[r, :len(wi)] = torch.tensor(wi)
        return ids, mask, first

    def early_call(self, input_ids: list[list[int]], word_index: list[list[int]], batch_size: int = 1):
        """A function that runs the early exit once over the encoded sentences, ``batch_size`` at a time
        (right-padded; each sentence leaves at its own exit), from token ids to tags per word: what the
        benchmark's clock times (tokenising is outside, as for ``deployed_call``)."""
        prepared = [(self._inputs(input_ids[b:b + batch_size], word_index[b:b + batch_size]),
                     list(range(len(input_ids[b:b + batch_size])))) for b in range(0, len(input_ids), batch_size)]
        out: list = [None] * batch_size

        @torch.inference_mode()
        def run() -> None:
            for (ids, mask, first), rows in prepared:
                self._run(ids, mask, first, rows, out, None)
        return run

    def _answer(self, logits: torch.Tensor, first: torch.Tensor, rows: list[int], layer: int, out: list,
                which: torch.Tensor) -> None:
        probs = torch.softmax(logits.float(), -1)
        for j in which.tolist():
            pos = (first[j] >= 0).nonzero().squeeze(1)
            p = probs[j, pos.to(probs.device)]
            out[rows[j]] = (p.argmax(-1).tolist(), p.amax(-1).tolist(), layer)

    def _run(self, ids, mask, first, rows, out, exit_at) -> None:
        hidden = self.adapter.embed(ids, mask, None)
        state = self.adapter.prepare(hidden, mask)
        # an exit calibrated "never" cannot fire: not evaluated (no head, no score, no host sync), as the ONNX
        # export leaves it out; a forced exit (``exit_at``) evaluates only the one it names
        skip = skipped_exits(self.thresholds, self.criterion.stateless) if exit_at is None else \
            frozenset(range(len(self.exits.layers))) - {exit_at}
        k = 0  # the next exit
        for i in range(self.num_layers):
            hidden = self.adapter.layer(i, hidden, state)
            if k == len(self.exits.layers) or self.exits.layers[k] != i + 1:
                continue
            at, k = k, k + 1
            if at in skip:
                continue
            logits = self.exits.heads[at](hidden.float()).float()
            if exit_at is None:
                leave = sentences_leaving(self.criterion, logits, first, self.thresholds[at])
            else:
                leave = torch.full((len(rows),), exit_at == at)
            if leave.any():
                self._answer(logits, first, rows, i + 1, out, leave.nonzero().squeeze(1))
                keep = (~leave).nonzero().squeeze(1)
                if not len(keep):
                    return
                on = keep.to(hidden.device)
                hidden, mask, first = hidden.index_select(0, on), mask.index_select(0, on), first[keep]
                state = self.adapter.select(state, on)
                rows = [rows[j] for j in keep.tolist()]
        self._answer(tag_logits(self.deployed.model, hidden), first, rows, self.num_layers, out,
                     torch.arange(len(rows)))

    def deployed_call(self, ids: list[list[int]], batch_size: int = 1):
        """A function that runs the deployed tagger as this runtime ships it once over the sentences' token
        ids, ``batch_size`` at a time (right-padded): what the benchmark's clock compares the early exit with."""
        model = self.deployed.model
        inputs = [self._padded(ids[b:b + batch_size]) for b in range(0, len(ids), batch_size)]

        @torch.inference_mode()
        def run() -> None:
            for x, mask in inputs:
                model(input_ids=x, attention_mask=mask)
        return run

    def predict(self, texts: list[str], batch_size: int = 32, exit_at: int | None = None) -> list[dict]:
        """One row per text: its words' tags, the entity spans (character offsets into the text), the exit layer."""
        split = [split_words(self.deployed.tokenizer, t) for t in texts]
        tagged = self.tag_words([[w for w, _, _ in s] or [""] for s in split], batch_size, exit_at)
        id2label = self.deployed.id2label
        rows = []
        for text, words, (ids, conf, layer) in zip(texts, split, tagged):
            tags = [id2label[i] for i in ids] + ["O"] * (len(words) - len(ids))
            conf = conf + [1.0] * (len(words) - len(ids))
            entities = [{"text": text[words[a][1]:words[b - 1][2]], "entity": kind, "start": words[a][1],
                         "end": words[b - 1][2], "score": round(sum(conf[a:b]) / (b - a), 6)}
                        for kind, a, b in spans(tags)]
            tokens = [{"word": w, "tag": t, "start": a, "end": e, "score": round(c, 6)}
                      for (w, a, e), t, c in zip(words, tags, conf)]
            if isinstance(layer, list):  # per-token exit (model/token_halt.py): each word's own layer
                for t, word_layer in zip(tokens, layer):
                    t["exit_layer"] = word_layer
                layer = max(layer, default=self.num_layers)  # the layers the sentence ran
            rows.append({"text": text, "entities": entities, "exit_layer": layer, "tokens": tokens})
        return rows
