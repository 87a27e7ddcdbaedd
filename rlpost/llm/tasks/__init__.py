"""TabMWP tasks: schema, synthetic generator, real loader, prompts, answers, rewards, tokenizer.

Heavy dependencies (`datasets`, `transformers`) are imported only inside the functions that need
them, so importing this package stays cheap.
"""
from rlpost.llm.tasks.answers import answers_match
from rlpost.llm.tasks.answers import extract_answer
from rlpost.llm.tasks.answers import is_correct
from rlpost.llm.tasks.answers import match_choice
from rlpost.llm.tasks.answers import normalize_answer
from rlpost.llm.tasks.answers import parse_number
from rlpost.llm.tasks.prompts import format_prompt
from rlpost.llm.tasks.prompts import format_target
from rlpost.llm.tasks.rewards import accuracy_reward
from rlpost.llm.tasks.rewards import check_rewards_finite
from rlpost.llm.tasks.rewards import format_reward
from rlpost.llm.tasks.rewards import make_reward_fn
from rlpost.llm.tasks.schema import RecordError
from rlpost.llm.tasks.schema import TabMWPRecord
from rlpost.llm.tasks.schema import validate_record
from rlpost.llm.tasks.synthetic import FAMILIES
from rlpost.llm.tasks.synthetic import STYLES
from rlpost.llm.tasks.synthetic import difficulty_spec
from rlpost.llm.tasks.synthetic import generate_dataset
from rlpost.llm.tasks.synthetic import problem_key
from rlpost.llm.tasks.synthetic import sample_problem
from rlpost.llm.tasks.synthetic import split_of
from rlpost.llm.tasks.tabmwp import load_tabmwp
from rlpost.llm.tasks.tabmwp import load_tabmwp_dataset
from rlpost.llm.tasks.tokenizer import TokenizerError
from rlpost.llm.tasks.tokenizer import encode_example
from rlpost.llm.tasks.tokenizer import load_tokenizer
