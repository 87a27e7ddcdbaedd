"""A small BPE tokenizer for the synthetic TabMWP tasks, saved in the transformers format.

Built with the `tokenizers` library and wrapped as a `transformers.PreTrainedTokenizerFast`, so
it is loaded exactly like any Hugging Face tokenizer (`AutoTokenizer.from_pretrained(dir)`) and
the RL/SFT code has one path for both.

Design (for a tiny from-scratch policy):
  * spaces become "▁" (SentencePiece's meta-space) and stay attached to the next piece, so
    decoding is exactly lossless for ASCII text;
  * pre-tokens are a single digit, a run of letters, one punctuation character or one
    whitespace character, each optionally preceded by "▁": digits are never merged (numbers
    read digit by digit, "▁1" "2" for " 12"), table pipes become "▁|", newlines stay "\\n";
  * BPE merges (vocab 384 by default) are learned on generated prompts and targets of every
    family, level and solution style, so template words are one token each;
  * special tokens <pad>=0, <bos>=1, <eos>=2, <unk>=3; characters outside printable ASCII map
    to <unk> (real TabMWP text with such characters does not round-trip; use an HF tokenizer).

No post-processor adds <bos>/<eos>: `encode_example` adds them explicitly, the same way it would
for an HF tokenizer.

Rebuild the shipped copy (deterministic given the corpus seed), and print length stats:
    python -m rlpost.llm.tasks.tokenizer --out rlpost/assets/tokenizer
    python -m rlpost.llm.tasks.tokenizer --stats
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import string
from collections.abc import Iterable, Sequence

from rlpost.llm.tasks import prompts
from rlpost.llm.tasks import schema
from rlpost.llm.tasks import synthetic

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
META_SPACE = "\u2581"
PRETOKEN_PATTERN = (rf"{META_SPACE}?\d|{META_SPACE}?[A-Za-z]+|"
                    rf"{META_SPACE}?[^\sA-Za-z\d{META_SPACE}]|\s|{META_SPACE}")
ALPHABET = tuple(string.ascii_letters + string.digits + string.punctuation) + (META_SPACE, "\n")
DEFAULT_TOKENIZER_DIR = pathlib.Path(__file__).resolve().parents[2] / "assets" / "tokenizer"
_FAST_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")
VOCAB_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "tokenizer.model", "spiece.model")


class TokenizerError(ValueError):
  """A tokenizer directory cannot be loaded."""


def training_corpus(*, seed: int = 1234, per_level: int = 300,
                    levels: Sequence[int] = tuple(range(1, synthetic.MAX_LEVEL + 1))) -> list[str]:
  """Prompts and targets (every solution style) of generated train problems."""
  texts = []
  for level in levels:
    for record in synthetic.generate_dataset(per_level, seed=seed, split="train", level=level):
      texts.append(prompts.format_prompt(record))
      texts.extend(prompts.format_target(record, style) for style in synthetic.STYLES)
  return texts


def build_tokenizer(texts: Iterable[str], *, vocab_size: int = 384):
  """Trains the BPE tokenizer on `texts`; returns a `transformers.PreTrainedTokenizerFast`."""
  from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers  # pylint: disable=g-import-not-at-top
  from transformers import PreTrainedTokenizerFast  # pylint: disable=g-import-not-at-top

  min_size = len(SPECIAL_TOKENS) + len(ALPHABET)
  if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < min_size:
    raise ValueError(f"vocab_size must be an int >= {min_size} (specials + alphabet), got "
                     f"{vocab_size!r}")
  tok = Tokenizer(models.BPE(unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Metaspace(replacement=META_SPACE, prepend_scheme="never", split=False),
      pre_tokenizers.Split(Regex(PRETOKEN_PATTERN), behavior="isolated"),
  ])
  tok.decoder = decoders.Metaspace(replacement=META_SPACE, prepend_scheme="never", split=False)
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                initial_alphabet=list(ALPHABET), limit_alphabet=len(ALPHABET),
                                show_progress=False)
  tok.train_from_iterator(texts, trainer)
  return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>",
                                 eos_token="<eos>", unk_token="<unk>",
                                 clean_up_tokenization_spaces=False, model_max_length=4096)


def save_tokenizer(tokenizer, out_dir: str | os.PathLike) -> pathlib.Path:
  """save_pretrained, with tokenizer_class set to PreTrainedTokenizerFast (transformers 4 and 5
  both resolve that name)."""
  out = pathlib.Path(out_dir)
  tokenizer.save_pretrained(str(out))
  config_path = out / "tokenizer_config.json"
  config = json.loads(config_path.read_text())
  config["tokenizer_class"] = "PreTrainedTokenizerFast"
  config.pop("backend", None)
  config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
  return out


def load_tokenizer(path: str | os.PathLike | None = None):
  """A transformers tokenizer from a local directory (None = the shipped synthetic-task one).

  Directories saved as a plain `PreTrainedTokenizerFast` are opened with that class directly;
  anything else (an HF model's tokenizer) goes through `AutoTokenizer.from_pretrained`.

  Raises:
    TokenizerError: naming the directory when it is missing or holds no vocabulary file.
  """
  directory = DEFAULT_TOKENIZER_DIR if path is None else pathlib.Path(path)
  if not directory.is_dir():
    raise TokenizerError(f"tokenizer directory {str(directory)!r} does not exist")
  if not any((directory / name).is_file() for name in VOCAB_FILES):
    raise TokenizerError(f"tokenizer directory {str(directory)!r} has no vocabulary: expected "
                         f"one of {VOCAB_FILES}")
  try:
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    if (config.get("tokenizer_class") in _FAST_CLASSES and
        (directory / "tokenizer.json").is_file()):
      # Same class AutoTokenizer resolves to, without AutoTokenizer's import of torch (~seconds).
      from transformers import PreTrainedTokenizerFast  # pylint: disable=g-import-not-at-top
      return PreTrainedTokenizerFast.from_pretrained(str(directory), local_files_only=True)
    from transformers import AutoTokenizer  # pylint: disable=g-import-not-at-top
    return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
  except (OSError, ValueError, json.JSONDecodeError) as e:
    raise TokenizerError(f"cannot load tokenizer from {str(directory)!r}: {e}") from e


def encode_example(tokenizer, record: schema.TabMWPRecord, *, style: str | None = None,
                   add_bos: bool = True, add_eos: bool = True) -> tuple[list[int], list[int]]:
  """(prompt_ids, target_ids): [<bos>] + prompt and target + [<eos>], encoded separately.

  The prompt/target boundary is a pre-token boundary, so prompt_ids + target_ids equals the
  encoding of the concatenated text (tested).
  """
  prompt_ids = tokenizer.encode(prompts.format_prompt(record), add_special_tokens=False)
  target_ids = tokenizer.encode(prompts.format_target(record, style), add_special_tokens=False)
  if add_bos:
    if tokenizer.bos_token_id is None:
      raise TokenizerError("add_bos=True but the tokenizer has no bos_token")
    prompt_ids = [tokenizer.bos_token_id] + prompt_ids
  if add_eos:
    if tokenizer.eos_token_id is None:
      raise TokenizerError("add_eos=True but the tokenizer has no eos_token")
    target_ids = target_ids + [tokenizer.eos_token_id]
  return prompt_ids, target_ids


def token_length_stats(tokenizer, *, level: int, num_problems: int = 500, seed: int = 0,
                       split: str = "dev", style: str | None = None,
                       families: Sequence[str] = synthetic.FAMILIES) -> dict[str, float]:
  """Prompt/target token lengths (with <bos>/<eos>) of generated problems at one level."""
  prompt_lens, target_lens = [], []
  for record in synthetic.generate_dataset(num_problems, seed=seed, split=split, level=level,
                                           families=families):
    prompt_ids, target_ids = encode_example(tokenizer, record, style=style)
    prompt_lens.append(len(prompt_ids))
    target_lens.append(len(target_ids))
  return {"level": level, "style": style or "rows", "n": num_problems,
          "prompt_mean": sum(prompt_lens) / num_problems, "prompt_max": max(prompt_lens),
          "target_mean": sum(target_lens) / num_problems, "target_max": max(target_lens)}


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default=str(DEFAULT_TOKENIZER_DIR))
  parser.add_argument("--vocab_size", type=int, default=384)
  parser.add_argument("--seed", type=int, default=1234)
  parser.add_argument("--per_level", type=int, default=300)
  parser.add_argument("--stats", action="store_true",
                      help="print token-length stats of the tokenizer in --out per level/style")
  args = parser.parse_args(argv)
  if args.stats:
    tokenizer = load_tokenizer(args.out)
    for level in range(1, synthetic.MAX_LEVEL + 1):
      for style in synthetic.STYLES:
        print(json.dumps(token_length_stats(tokenizer, level=level, style=style)))
    return
  texts = training_corpus(seed=args.seed, per_level=args.per_level)
  tokenizer = build_tokenizer(texts, vocab_size=args.vocab_size)
  out = save_tokenizer(tokenizer, args.out)
  print(f"saved tokenizer (vocab {len(tokenizer)}) trained on {len(texts)} texts to {out}")


if __name__ == "__main__":
  main()
