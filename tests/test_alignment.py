"""Subword label alignment and reading predictions back per word."""

from __future__ import annotations

import torch
from helpers import DATA

from lightkit.data.token_classification import IGNORE, align_labels
from lightkit.models.hub import load_tokenizer
from lightkit.objectives.word_tags import decode_words

# label ids: O=0, B-PER=1, I-PER=2
B_TO_I = {1: 2}


def test_first_subword_carries_the_label_and_specials_are_ignored() -> None:
    word_ids = [None, 0, 1, 1, 1, 2, None]  # [CLS] w0 w1 w1 w1 w2 [SEP]
    assert align_labels(word_ids, [1, 2, 0]) == [IGNORE, 1, 2, IGNORE, IGNORE, 0, IGNORE]


def test_label_all_tokens_maps_b_to_i_on_later_subwords() -> None:
    word_ids = [None, 0, 0, 0, 1, None]
    assert align_labels(word_ids, [1, 0], label_all_tokens=True, b_to_i=B_TO_I) == [IGNORE, 1, 2, 2, 0, IGNORE]


def test_alignment_through_the_real_fast_tokenizer() -> None:
    tok = load_tokenizer(str(DATA / "tokenizer"))
    words = ["alice", "okonkwo", "visited", "paris"]  # okonkwo is not in the vocab: several pieces
    enc = tok(words, is_split_into_words=True)
    labels = align_labels(enc.word_ids(), [1, 2, 0, 0])
    pieces = tok.convert_ids_to_tokens(enc["input_ids"])
    assert pieces[2:4] == ["o", "##k"]  # the split really happens
    kept = [(p, lab) for p, lab in zip(pieces, labels) if lab != IGNORE]
    assert kept == [("alice", 1), ("o", 2), ("visited", 0), ("paris", 0)]


def test_word_predictions_read_first_subwords_and_fill_truncated_words() -> None:
    token_preds = [9, 1, 2, 3, 0, 9]  # the second subword of word 1 says 3: ignored
    word_ids = [-1, 0, 1, 1, 2, -1]
    logits = torch.nn.functional.one_hot(torch.tensor(token_preds), 10).float()
    # 5 words but only 3 survived truncation: the last two are predicted O (id 0), never dropped
    assert decode_words(logits, word_ids, num_words=5) == [1, 2, 0, 0, 0]
    assert decode_words(logits, [None, 0, 1, 1, 2, None], num_words=3) == [1, 2, 0]  # tokenizer word_ids()
