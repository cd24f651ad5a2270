"""A masked LM's candidates: loading one from local files safely, and ranking words at masked positions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgebert.augment.words import whole_word_tokens
from edgebert.data import check_tokenizer_files
from edgebert.errors import EdgebertError, require
from edgebert.manifests import FileRef
from edgebert.model_files import CONFIG_FILE, WEIGHTS_FILES, model_file, tokenizer_files
from edgebert.reading import file_sha256

if TYPE_CHECKING:
    import torch

MAX_MLM_LENGTH = 512  # tokens of a masked-LM input (the masked text and the original), as TinyBERT cuts it


@dataclass
class MaskedLM:
    """A local masked LM, its tokenizer, and the vocabulary columns that are whole words."""

    model: Any
    tokenizer: Any
    word_ids: torch.Tensor
    words: list[str]
    max_length: int
    reference: FileRef


def load_masked_lm(directory: Path) -> MaskedLM:
    """A Hugging Face masked-LM directory, from local files only: weights by safetensors or a weights-only
    torch.load, no remote code, no file linked from outside the directory."""
    transformers = require("transformers", "a masked language model (--mlm)")
    if not directory.is_dir():
        raise EdgebertError(f"{directory}: no such model directory (--mlm)")
    if model_file(directory, CONFIG_FILE) is None:
        raise EdgebertError(f"{directory} has no {CONFIG_FILE}: not a Hugging Face model directory (--mlm)")
    weights = next((path for name in WEIGHTS_FILES if (path := model_file(directory, name)) is not None), None)
    if weights is None:
        raise EdgebertError(f"{directory} has no weights: expected one of {', '.join(WEIGHTS_FILES)} (--mlm)")
    check_tokenizer_files(directory, {path.name for path in tokenizer_files(directory)})
    bar_shown = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # edgebert's own progress line is the one shown
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(directory), local_files_only=True, trust_remote_code=False
        )
        model = transformers.AutoModelForMaskedLM.from_pretrained(
            str(directory), local_files_only=True, trust_remote_code=False, weights_only=True
        ).eval()
    except Exception as exc:  # transformers raises many kinds (OSError, ValueError, KeyError...) on a bad directory
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EdgebertError(f"{directory}: cannot load it as a masked language model ({reason})") from exc
    finally:
        if bar_shown:
            transformers.utils.logging.enable_progress_bar()
    if tokenizer.mask_token_id is None or model.get_output_embeddings() is None:
        raise EdgebertError(f"{directory}: no mask token or no vocabulary projection: not a masked language model")
    import torch

    words = whole_word_tokens(tokenizer)
    ids = sorted(words)
    positions = getattr(model.config, "max_position_embeddings", MAX_MLM_LENGTH)
    return MaskedLM(
        model,
        tokenizer,
        torch.tensor(ids),
        [words[i] for i in ids],
        min(MAX_MLM_LENGTH, positions, tokenizer.model_max_length),
        FileRef(path=str(directory), sha256=file_sha256(weights)),
    )


def masked_lm_candidates(
    mlm: MaskedLM, occurrences: Sequence[tuple[str, int, int]], k: int, batch_size: int
) -> list[list[str]]:
    """The `k` most likely whole words at each occurrence (text, start, end) masked, best first.

    The input is TinyBERT's: the text with the word masked, paired with the original text. Inputs are grouped
    by length, never padded, so a row's logits do not depend on the others in its batch. An occurrence whose
    mask did not survive truncation (or whose text holds the mask token itself) gets none.
    """
    import torch

    mask = mlm.tokenizer.mask_token
    encoded = mlm.tokenizer(
        [text[:start] + mask + text[end:] for text, start, end in occurrences],
        [text for text, _, _ in occurrences],
        truncation=True,
        max_length=mlm.max_length,
    )
    ids, types = encoded["input_ids"], encoded.get("token_type_ids")
    by_length: dict[int, list[int]] = {}
    for i, row in enumerate(ids):
        if row.count(mlm.tokenizer.mask_token_id) == 1:
            by_length.setdefault(len(row), []).append(i)
    ranked: list[list[str]] = [[] for _ in occurrences]
    for members in by_length.values():
        for start in range(0, len(members), batch_size):
            batch = members[start : start + batch_size]
            inputs = {"input_ids": torch.tensor([ids[i] for i in batch])}
            inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
            if types is not None:
                inputs["token_type_ids"] = torch.tensor([types[i] for i in batch])
            rows = torch.arange(len(batch))
            positions = (inputs["input_ids"] == mlm.tokenizer.mask_token_id).int().argmax(dim=1)
            # The vocabulary projection at the masked positions only: at all of them it doubles a small LM's work.
            only_masked = mlm.model.get_output_embeddings().register_forward_pre_hook(
                lambda module, args: (args[0][rows, positions],)  # noqa: B023 (used before the loop moves on)
            )
            try:
                with torch.inference_mode():
                    logits = mlm.model(**inputs).logits
            finally:
                only_masked.remove()
            top = logits[:, mlm.word_ids].topk(min(k, len(mlm.words)), dim=1).indices
            for i, row in zip(batch, top.tolist(), strict=True):
                ranked[i] = [mlm.words[j] for j in row]
    return ranked
