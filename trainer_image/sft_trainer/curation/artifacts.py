"""Step 4, chatbot artifacts: text a model should never learn to say (hard reject).

Each pattern is written against what chatbots actually emit (raw Alpaca,
ShareGPT, the Safety-Tuned LLaMAs refusals); see tests/unit/curation for the
real records that pin them down.
"""

from __future__ import annotations

import re

from ..formats import Conversation
from .base import Filter

# Content patterns run on lower-cased text: cheaper than re.IGNORECASE.
_I = 0


class Needled:
    """A pattern behind a substring test: every match contains one of `needles`.

    `in` is a C scan, while a pattern that opens with a word boundary and a
    long alternation is tried at every position; most responses contain none
    of the needles, so most never reach the pattern. The needles are part of
    the pattern's contract: tests check both agree on real records.
    """

    def __init__(self, pattern: re.Pattern[str], needles: tuple[str, ...]) -> None:
        self.pattern, self.needles = pattern, needles

    def search(self, text: str) -> re.Match[str] | None:
        return self.pattern.search(text) if any(n in text for n in self.needles) else None


AI_DISCLAIMER_PATTERN = re.compile(
    r"\bas an? (?:ai|a\.i\.|artificial intelligence|(?:large )?language model|ai language model|text[- ]based (?:ai|model|assistant)"
    r"|virtual assistant|digital assistant|ai assistant|ai model|machine learning model|computer program|chatbot)\b"
    r"|\bi(?:'m| am) (?:just |only |merely )?an? (?:ai|artificial intelligence|(?:large )?language model|ai language model|ai assistant"
    r"|virtual assistant|computer program|machine learning model|chatbot|text-based)\b"
    r"|\b(?:being|since i am|because i am|i'm) (?:an? )?(?:ai|language model|machine)\b,? i (?:do not|don't|cannot|can't)\b",
    _I,
)
KNOWLEDGE_CUTOFF_PATTERN = re.compile(
    r"\b(?:knowledge cut-?off|training cut-?off|my training data(?: only)? (?:goes|extends|runs)|"
    r"as of my (?:last |latest )?(?:knowledge |training )?(?:update|cutoff|cut-off|training)|"
    r"i (?:do not|don't|cannot|can't) (?:have )?(?:access to |browse )(?:the )?(?:internet|web|real[- ]time|current events|up-to-date)|"
    r"i (?:do not|don't) have (?:the ability to )?(?:browse|access) (?:the )?(?:internet|web)|"
    r"(?:not|unable to) (?:able to )?browse the (?:internet|web))",
    _I,
)
IDENTITY_CLAIM_PATTERN = re.compile(
    r"\b(?:i am|i'm|my name is|this is) (?:chatgpt|gpt-?\d|an? openai|openai|claude|bard|vicuna|llama|alpaca|koala|gemini|bing chat)\b"
    r"|\b(?:i was|i am|i'm|i've been)\b[^.\n]{0,40}\b(?:trained|developed|created|built|made|programmed) by (?:openai|anthropic|google|meta|lmsys|large model systems|microsoft)\b"
    r"|\b(?:a|an) (?:large )?language model (?:trained|developed|created|built) by\b",
    _I,
)
AI_DISCLAIMER = Needled(AI_DISCLAIMER_PATTERN, ("as a", "i'm", "i am", "being"))
KNOWLEDGE_CUTOFF = Needled(KNOWLEDGE_CUTOFF_PATTERN, ("cut", "training data", "as of my", "browse", "access"))
IDENTITY_CLAIM = Needled(
    IDENTITY_CLAIM_PATTERN, ("i am", "i'm", "my name is", "this is", "i was", "i've been", "language model")
)
# Inability statements typical of a model that could not do the task
# ("This task cannot be completed by a GPT model", "I'm sorry, but I cannot ...").
# What a model refuses to do, as opposed to "I can't believe it" or "I can't stop smiling".
_REFUSED_ACT = (
    r"(?:help|assist|provide|create|generate|draw|design|perform|complete|fulfil+|do (?:that|this)|answer|comply|access|see|view|browse|"
    r"open|play|produce|render|share|display|show|send|upload|listen|watch|hear|physically|visuali[sz]e|comment|express|have (?:personal|opinions|feelings))"
)
REFUSAL = re.compile(
    rf"^\W*(?:i'?m sorry|i am sorry|sorry|unfortunately|i apologi[sz]e)\b[^.\n]{{0,60}}?\bi (?:can ?not|can't|am unable to|am not able to|won't be able to) {_REFUSED_ACT}\b"
    rf"|^\W*i (?:cannot|can't|can not|am unable to|am not able to|won't be able to|must decline to) {_REFUSED_ACT}\b"
    r"|\b(?:this|the|that|your) (?:task|instruction|request|question|query) (?:cannot|can't|can not|is not possible to|is impossible to) be (?:completed|fulfilled|done|performed|answered|executed)\b"
    r"|\b(?:due to (?:the )?limitations? of|beyond the (?:capabilities|scope) of) (?:the |a |this )?(?:gpt|language|ai|text)[- ]?(?:based )?models?\b"
    r"|^\W*(?:no output|n/a|none)\W{0,4}(?:as |because |since )?(?:the |a )?gpt(?:-based)? (?:language )?models? (?:cannot|can't|can not)\b"
    r"|\b(?:cannot|can't|can not) be (?:done|fulfilled|completed|performed|accomplished|achieved) by (?:a |the )?gpt\b"
    r"|\bwhich (?:a |the )?(?:gpt )?(?:language )?model cannot (?:do|provide|create|produce|generate)\b"
    r"|\b(?:the|this) gpt (?:language )?model (?:cannot|can't|can not|will not be able to|is not able to|is unable to) (?:perform|produce|output|solve|create|generate|do|complete)\b",
)

# A request that is itself harmful: refusing it is the right answer, so it is kept.
HARMFUL_REQUEST = re.compile(
    r"\b(?:kill\w*|murder\w*|bomb\w*|explosive|weapons?|guns?|poison\w*|hack\w*|steal\w*|theft|drugs?|meth|cocaine|heroin|suicid\w*|self-harm|terror\w*|"
    r"racist|sexist|porn\w*|illegal(?:ly)?|fraud|launder\w*|counterfeit|malware|ransomware|phishing|scam|cheat|harass\w*|stalk\w*|"
    r"abus\w*|hurt\w*|harm\w*|violent|violence|attack\w*|tortur\w*|kidnap\w*|smuggl\w*|extort\w*|blackmail|insult\w*|offensive|slurs?|hate|hatred)\b",
    _I,
)
# A prompt about what the assistant is or can do (who it is, which questions
# it cannot answer, a greeting) or about live data it cannot see: there,
# saying it is an AI is the honest answer, not a tic (LIMA's human-written
# answers do it). Asked for an opinion or a favourite, the disclaimer is the
# tic: a good answer gives a view or the facts.
ASKS_ABOUT_ASSISTANT = re.compile(
    r"\b(?:who|what) are you\b|\babout yourself\b|\bintroduce yourself\b"
    r"|\bare you (?:an? |human|real|alive|conscious|sentient|self-aware)"
    r"|\b(?:what|which) (?:kinds? of |types? of )?(?:questions|things|tasks) (?:can|can't|cannot|can not) you\b"
    r"|^\W*(?:hi|hello|hey|good (?:morning|afternoon|evening))\b|\bnice to meet you\b"
    r"|\b(?:current|today'?s|right now|real[- ]time|live) (?:stock|price|weather|news|time|score|exchange rate)",
    _I,
)
# Special tokens and prompt-template markup of common chat formats.
TEMPLATE_LEAK = re.compile(
    r"<\|(?:im_start|im_end|endoftext|eot_id|begin_of_text|end_of_text|start_header_id|end_header_id|system|user|assistant|end|pad)\|>"
    r"|\[/?INST\]|<</?SYS>>|<start_of_turn>|<end_of_turn>"
    r"|^#{2,4} ?(?:Instruction|Response|Input|Human|Assistant)s?:",
    re.I | re.M,
)
# Every template leak above contains one of these characters.
_LEAK_CHARS = ("<", "[", "#")


class Artifacts(Filter):
    """Reject AI disclaimers, knowledge-cutoff notes, identity claims, benign refusals and leaked template tokens."""

    name = "artifacts"

    def check(self, conv: Conversation) -> str | None:
        prompt = ""
        for message in conv.messages:
            if any(c in message.content for c in _LEAK_CHARS) and TEMPLATE_LEAK.search(message.content):
                return "template_leak"
            text = message.content.lower()
            if message.role != "assistant":
                if message.role == "user":
                    prompt = text
                continue
            about_assistant = ASKS_ABOUT_ASSISTANT.search(prompt) is not None
            if AI_DISCLAIMER.search(text) and not about_assistant:
                return "ai_disclaimer"
            if KNOWLEDGE_CUTOFF.search(text) and not about_assistant:
                return "knowledge_cutoff"
            if IDENTITY_CLAIM.search(text):
                return "identity_claim"
            if REFUSAL.search(text[:300]) and not HARMFUL_REQUEST.search(prompt):
                return "benign_refusal"
        return None
