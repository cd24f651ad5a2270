"""`edgebert augment`: TinyBERT's data augmentation, the training data DynaBERT's distillation phases use.

Every example gets N variants (TinyBERT's `data_augmentation.py`: N = 20 for SST-2): each replaceable
word (letters only, not a stop word, as TinyBERT's filter) is replaced with probability p = 0.4 by one of
its top K = 15 candidates, drawn uniformly:
- a word the teacher's tokenizer keeps as ONE wordpiece: the K most likely whole words at its position by
  a masked LM when one is given (TinyBERT's way, with its input: the masked text paired with the original),
  else its K nearest whole words (cosine) in the teacher's own word-embedding table;
- a word of several wordpieces: its K nearest neighbours in a GloVe-format word-vectors file when one is
  given (its first 100,000 words, as TinyBERT reads), else it is kept.
Words are those the teacher tokenizer's pre-tokenization makes (what WordPiece sees), replaced in place in
the original text: case (matched to the word's), spacing and punctuation stay. A variant equal to the
original or to an earlier variant is dropped (TinyBERT draws N and drops repeats too), so an example may
have fewer than N. Sentence pairs: each variant replaces words on both sides. Labels are copied: the
distillation losses are against the teacher.

Deterministic for a seed: each example draws from its own generator, seeded by (seed, its index in the
file), and neighbours are ranked in float64 with ties broken by vocabulary order, so neither the chunking
nor the masked-LM batch size changes a byte. Examples go through in chunks: bounded memory, a progress line.

Differences from TinyBERT's script, on purpose: the candidate that is the word itself (the masked LM's
usual first choice, since the original text is in its input) is skipped, so K candidates are K other
words; candidates are whole words of letters only (no `##` pieces, punctuation or placeholders); the
output keeps the original text around replaced words instead of re-joining lower-cased tokens; a pair's
variants change both sides at once (N per example) instead of one side at a time.

Modules, one per concern:
- `options`: AugmentOptions (TinyBERT's defaults) and the progress reporter;
- `manifest`: the typed manifest `<out>.json`, read_augmented, what --force may replace;
- `words`: a text's replaceable words by the teacher's tokenizer, whole-word tokens, stop words, case matching;
- `neighbours`: the vectorised cosine search, the teacher's embedding table, GloVe word vectors;
- `masked_lm`: loading a masked LM safely, its batched candidates;
- `variants`: the candidate sources, per-example generators, building variants, dev keys;
- `write`: reading the data, writing the rows and the tally, `augment_file` the entry.
"""

from edgebert.augment.manifest import AugmentManifest, manifest_path, read_augmented
from edgebert.augment.masked_lm import load_masked_lm, masked_lm_candidates
from edgebert.augment.neighbours import nearest_neighbours, teacher_table, unit_rows
from edgebert.augment.options import AugmentOptions
from edgebert.augment.words import STOP_WORDS, select_candidates, split_words, whole_word_tokens
from edgebert.augment.write import augment_file

__all__ = [
    "STOP_WORDS",
    "AugmentManifest",
    "AugmentOptions",
    "augment_file",
    "load_masked_lm",
    "manifest_path",
    "masked_lm_candidates",
    "nearest_neighbours",
    "read_augmented",
    "select_candidates",
    "split_words",
    "teacher_table",
    "unit_rows",
    "whole_word_tokens",
]
