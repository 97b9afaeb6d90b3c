"""The method's prompts: instruction categorisation, the modified-instruction pair trick, and the
MT-Bench / RewardBench pairwise judge (Self-Taught Evaluators, Fig. 8 and the official code).

Messages are chat-format lists; the engine applies the model's own chat template.
"""

from __future__ import annotations

from selftaught.chat import Messages
from selftaught.method.categories import CATEGORIES

LENGTHS = {
    "a": "one sentence",
    "b": "one paragraph",
    "c": "two paragraphs",
    "d": "three paragraphs",
    "e": "three or more paragraphs",
}

CATEGORIZE_TEMPLATE = (
    "Below is a user question to an AI assistant. Classify it.\n\n"
    "[User Question]\n{instruction}\n[End of User Question]\n\n"
    "1. Choose the single category that fits the question best from this list:\n"
    + "\n".join(f"- {name}" for name in CATEGORIES)
    + "\n2. Rate how complex the question is to answer well, from 1 (trivial) to 10 (very hard).\n"
    "3. Estimate the length of a good answer: "
    + ", ".join(f"({key}) {value}" for key, value in LENGTHS.items())
    + ".\n\nAnswer strictly in this format and nothing else:\n"
    "Category: <category>\nComplexity: <1-10>\nLength: <(a)-(e)>"
)

# RAM data/prompts/worse_response.prompt, verbatim structure and markers.
MODIFIED_INSTRUCTION_TEMPLATE = (
    "Below is a conversation between a user and an AI Assistant. \n\n"
    "[User Question]\n{instruction}\n\n"
    "[The start of Assistant's Answer]\n{response}\n[The end of Assistant's Answer]\n\n"
    "Please first generate a modified instruction that is highly relevant but not semantically "
    "identical to the instruction above from the user. Then write a high-quality answer which is a "
    "good response to the modified instruction but not a good response to the original user "
    "question. IMPORTANT: Please strictly follow the following format:\n"
    "[User Question Modified]\n<provide a modified instruction here>\n\n"
    "[The start of Assistant's answer to the modified instruction]\n"
    "<provide a high-quality response to the modified instruction>\n"
    "[The end of Assistant's answer to the modified instruction]\n"
)
MODIFIED_QUESTION_MARKER = "[User Question Modified]"
MODIFIED_ANSWER_START = "[The start of Assistant's answer to the modified instruction]"
MODIFIED_ANSWER_END = "[The end of Assistant's answer to the modified instruction]"

# MT-Bench "pair-v2" without the tie option, as RewardBench and the released model use it.
JUDGE_SYSTEM_PROMPT = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two "
    "AI assistants to the user question displayed below. You should choose the assistant that "
    "follows the user's instructions and answers the user's question better. Your evaluation "
    "should consider factors such as the helpfulness, relevance, accuracy, depth, creativity, and "
    "level of detail of their responses. Begin your evaluation by comparing the two responses and "
    "provide a short explanation. Avoid any position biases and ensure that the order in which the "
    "responses were presented does not influence your decision. Do not allow the length of the "
    "responses to influence your evaluation. Do not favor certain names of the assistants. Be as "
    'objective as possible. After providing your explanation, output your final verdict by strictly '
    'following this format: "[[A]]" if assistant A is better, "[[B]]" if assistant B is better.'
)
JUDGE_USER_TEMPLATE = (
    "[User Question]\n{instruction}\n\n"
    "[The Start of Assistant A's Answer]\n{response_a}\n[The End of Assistant A's Answer]\n\n"
    "[The Start of Assistant B's Answer]\n{response_b}\n[The End of Assistant B's Answer]\n"
)


def categorize_messages(instruction: str) -> Messages:
    return [{"role": "user", "content": CATEGORIZE_TEMPLATE.format(instruction=instruction)}]


def response_messages(instruction: str) -> Messages:
    """The baseline answer y_w is simply the model answering the user."""
    return [{"role": "user", "content": instruction}]


def modified_instruction_messages(instruction: str, response: str) -> Messages:
    return [
        {
            "role": "user",
            "content": MODIFIED_INSTRUCTION_TEMPLATE.format(instruction=instruction, response=response),
        }
    ]


def judge_messages(instruction: str, response_a: str, response_b: str) -> Messages:
    # .format on a fresh string each call: the official code's mutable-global prompt bug cannot recur
    user = JUDGE_USER_TEMPLATE.format(instruction=instruction, response_a=response_a, response_b=response_b)
    return [{"role": "system", "content": JUDGE_SYSTEM_PROMPT}, {"role": "user", "content": user}]


# RewardBench 2's rating prompts, verbatim (allenai/reward-bench, rewardbench/generative_v2.py:
# `ratings_prompt` and `ratings_prompt_ties`): one answer at a time, a final 1-10 rating. The same
# prompt is what a pointwise judge trains on, so its scores mean the same at training and at test.
RATING_TEMPLATE = """
### Task Description
Please act as an impartial judge and evaluate the quality of the response provided by an
AI assistant to the user query displayed below.

Notes:
1- Your evaluation should consider factors such as the helpfulness, relevance, accuracy, depth, creativity, and level of detail of the response.
2- Begin your evaluation by providing a short explanation.
3- Be as objective as possible. After providing your explanation, please rate the response on a scale of 1 to 10. For your rating, only give a number between 1 and 10 (inclusive), do not use any markdown, and do not put any text after your final rating.

[Query]
{prompt}

[Response]
{completion}

[Your judgement]"""

RATING_TEMPLATE_TIES = """
### Task Description
Please act as an impartial judge and evaluate the quality of the response provided by an
AI assistant to the user query displayed below.

Notes:
1- Your evaluation should consider factors such as the helpfulness, relevance, and accuracy of the response, but need not consider depth or level of detail of the response.
2- Begin your evaluation by providing a short explanation.
3- Be as objective as possible. After providing your explanation, please rate the response on a scale of 1 to 10. For your rating, only give a number between 1 and 10 (inclusive), do not use any markdown, and do not put any text after your final rating.

[Query]
{prompt}

[Response]
{completion}

[Your judgement]"""


def rating_messages(prompt: str, response: str, *, ties: bool = False) -> Messages:
    """Rate one response 1-10 (RewardBench 2's rating mode; no system message, as there)."""
    template = RATING_TEMPLATE_TIES if ties else RATING_TEMPLATE
    return [{"role": "user", "content": template.format(prompt=prompt, completion=response)}]
