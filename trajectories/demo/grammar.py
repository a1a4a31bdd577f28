"""A probabilistic grammar of a small English fragment: a training corpus and BLiMP-style minimal pairs.

The fragment has proper names, nouns with number (and gender for people), determiners (the/a/this/that/these/those
and no), adjectives, transitive and intransitive verbs agreeing in the present, past and perfect tenses (with
irregular past participles), reflexives, negation and the NPI "ever" (licensed by "not", by a "no" subject or by a
question), prepositional phrases and relative clauses on subjects (agreement attractors), and simple yes/no and
wh-questions. Everything is deterministic given a seed.

The paradigms range from bigram-easy (determiner-noun agreement) to long-distance (agreement across a relative
clause, NPI scope, reflexive gender), so their learning curves separate over training.

Paradigms are drawn from the same grammar as the corpus, so they are in distribution (but for the NPI paradigms'
"ever" inside a relative clause, see _npi_swap), and their grammatical sentences are excluded from any corpus built
for the suite: a model scores them by generalisation, not recall.
Sentences are words separated by single spaces with the final punctuation attached to the last word; the suite's
tokenizer splits it off.

    python -m trajectories.demo.grammar --write-tasks trajectories/builtin_tasks/minigrammar   # the built-in tasks
    python -m trajectories.demo.grammar --write-heldout trajectories/builtin_tasks/minigrammar_heldout  # its loss
    python -m trajectories.demo.grammar --sample 20   # print corpus sentences
"""

from __future__ import annotations

import argparse
import functools
import itertools
import random
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from trajectories import taskfiles

TASK_SEED = 0  # the seed of the built-in minigrammar tasks, and so of the sentences every suite corpus excludes
N_PAIRS = 1000
N_HELDOUT = 500  # sentences of the held-out text (the built-in minigrammar_heldout perplexity task)

SG, PL = "sg", "pl"


class Noun(NamedTuple):
    sg: str
    pl: str
    gender: str  # "m"/"f": a person of that gender; "n": a person of either; "i": an animal or thing ("itself")
    person: bool

    def form(self, number: str) -> str:
        return self.sg if number == SG else self.pl


class Verb(NamedTuple):
    base: str
    s: str  # third person singular present
    past: str
    pp: str  # past participle
    obj: str  # "any": people, animals or things (so also a reflexive); "thing": things only; "": intransitive
    strict: bool  # never used with the other transitivity in English, so safe for the argument-structure paradigms

    def present(self, number: str) -> str:
        return self.s if number == SG else self.base


def _nouns(spec: str, gender: str, person: bool) -> list[Noun]:
    return [Noun(*pair.split("/"), gender, person) for pair in spec.split()]


MALE_NAMES = "John David Michael Robert James Thomas Peter Daniel".split()
FEMALE_NAMES = "Mary Sarah Emily Laura Anna Rachel Lisa Helen".split()
PEOPLE = (
    _nouns("man/men boy/boys king/kings prince/princes brother/brothers waiter/waiters", "m", True)
    + _nouns("woman/women girl/girls queen/queens princess/princesses sister/sisters waitress/waitresses", "f", True)
    + _nouns("teacher/teachers doctor/doctors student/students child/children farmer/farmers lawyer/lawyers", "n", True)
)
ANIMALS = _nouns("dog/dogs cat/cats horse/horses bird/birds mouse/mice fox/foxes rabbit/rabbits wolf/wolves", "i",
                 False)
THINGS = _nouns(
    "book/books car/cars house/houses picture/pictures letter/letters box/boxes key/keys song/songs "
    "table/tables cake/cakes window/windows bottle/bottles",
    "i",
    False,
)
ANIMATE = PEOPLE + ANIMALS
ALL_NOUNS = ANIMATE + THINGS
ADJECTIVES = "big small tall happy young red little".split()  # consonant-initial, so "a" never needs to be "an"
PREPOSITIONS = "near behind beside with".split()
DETERMINERS = {SG: ("the", "a", "this", "that"), PL: ("the", "these", "those")}
DET_WEIGHTS = {SG: (0.5, 0.2, 0.15, 0.15), PL: (0.6, 0.2, 0.2)}
DEMONSTRATIVES = {SG: ("this", "that"), PL: ("these", "those")}
HAS = {SG: "has", PL: "have"}
DOES = {SG: "does", PL: "do"}
NO_RATE = 0.06  # how often a noun phrase of the corpus has the determiner "no"
# They occur where "not" does in the perfect, and before "ever" where something else licenses it.
NEUTRAL_ADVERBS = ("also", "really", "already")

TRANSITIVE = [
    Verb(*v.split(), obj, strict)
    for vs, obj, strict in [
        ("see sees saw seen|know knows knew known|hide hides hid hidden|forget forgets forgot forgotten|"
         "choose chooses chose chosen|hear hears heard heard|watch watches watched watched|"
         "help helps helped helped|visit visits visited visited|remember remembers remembered remembered",
         "any", False),
        ("take takes took taken|find finds found found|like likes liked liked|hate hates hated hated|"
         "love loves loved loved|admire admires admired admired|praise praises praised praised|hurt hurts hurt hurt|"
         "bring brings brought brought", "any", True),
        ("steal steals stole stolen|break breaks broke broken|write writes wrote written|read reads read read|"
         "open opens opened opened|carry carries carried carried", "thing", False),
    ]
    for v in vs.split("|")
]
INTRANSITIVE = [
    Verb(*v.split(), "", strict)
    for vs, strict in [
        ("sleep sleeps slept slept|laugh laughs laughed laughed|smile smiles smiled smiled|"
         "arrive arrives arrived arrived|fall falls fell fallen|go goes went gone|rise rises rose risen|"
         "sneeze sneezes sneezed sneezed", True),
        ("cry cries cried cried|swim swims swam swum|run runs ran run|wait waits waited waited", False),
    ]
    for v in vs.split("|")
]
VERBS = TRANSITIVE + INTRANSITIVE
IRREGULAR = [v for v in VERBS if v.past != v.pp]  # the past and the participle differ, so one can replace the other
DO_SUPPORT = [v for v in TRANSITIVE if v.past != v.base]  # "did ... see" vs "did ... saw" must differ
REFLEXIVE = {"m": "himself", "f": "herself", "i": "itself"}


def vocabulary() -> list[str]:
    """Every word the grammar can produce, in a fixed order, with capitalised variants for sentence starts."""
    words = MALE_NAMES + FEMALE_NAMES + ADJECTIVES + PREPOSITIONS + list(NEUTRAL_ADVERBS)
    words += [n.sg for n in ALL_NOUNS] + [n.pl for n in ALL_NOUNS]
    words += [form for v in VERBS for form in v[:4]]
    words += "the a this that these those no who what has have does do did not never ever".split()
    words += ["himself", "herself", "itself", "themselves"]
    seen: dict[str, None] = {}
    for w in words:
        seen[w] = None
        seen[w[0].upper() + w[1:]] = None
    return list(seen)


# --- Building blocks. An NP is returned as (words, number, gender).


def _number(r: random.Random) -> str:
    return SG if r.random() < 0.5 else PL


def _det(r: random.Random, number: str) -> str:
    return r.choices(DETERMINERS[number], DET_WEIGHTS[number])[0]


def _simple_np(r: random.Random, nouns: list[Noun], *, number: str | None = None, names: float = 0.0,
               adj: float = 0.2, no: float = 0.0) -> tuple[list[str], str, str]:
    """A name, or determiner (adjective) noun; `no` is the chance of the determiner "no"."""
    people = nouns[0].person
    if number != PL and people and r.random() < names:
        male = r.random() < 0.5
        return [r.choice(MALE_NAMES if male else FEMALE_NAMES)], SG, "m" if male else "f"
    number = number or _number(r)
    noun = r.choice(nouns)
    det = "no" if no and r.random() < no else _det(r, number)
    words = [det] + ([r.choice(ADJECTIVES)] if r.random() < adj else []) + [noun.form(number)]
    return words, number, noun.gender


def _reflexive(r: random.Random, number: str, gender: str) -> str:
    if number == PL:
        return "themselves"
    return REFLEXIVE[gender] if gender != "n" else r.choice(("himself", "herself"))


def _object(r: random.Random, verb: Verb, subj_number: str, subj_gender: str, reflexive: float = 0.3,
            no: float = 0.0) -> list[str]:
    if verb.obj == "any" and r.random() < reflexive:
        return [_reflexive(r, subj_number, subj_gender)]
    nouns = THINGS if verb.obj == "thing" else r.choice((PEOPLE, ANIMALS, THINGS))
    words, _, _ = _simple_np(r, nouns, names=0.2, no=no)
    if r.random() < 0.1:
        words += [r.choice(PREPOSITIONS)] + _simple_np(r, r.choice((PEOPLE, ANIMALS, THINGS)))[0]
    return words


def _pick_verb(r: random.Random, transitive: float = 0.6) -> Verb:
    return r.choice(TRANSITIVE if r.random() < transitive else INTRANSITIVE)


def _perfect_adverb(r: random.Random, licensed: bool) -> list[str]:
    x = r.random()
    if x < 0.5:
        return []
    if x < 0.75:
        return [r.choice(NEUTRAL_ADVERBS)]
    if licensed:
        return r.choice((["ever"], [r.choice(NEUTRAL_ADVERBS), "ever"]))
    return r.choice((["not"], ["never"], ["not", "ever"]))


def _vp(r: random.Random, number: str, gender: str, verb: Verb | None = None, reflexive: float = 0.3,
        licensed: bool = False, no: float = 0.0) -> list[str]:
    """A predicate agreeing with a subject of `number`; a reflexive object takes the subject's number and gender.

    A `licensed` predicate has a "no" subject: "ever" may occur without "not", and a second negation may not.
    """
    verb = verb or _pick_verb(r)
    x = r.random()
    ever = ["ever"] if licensed and r.random() < 0.4 else []
    if x < 0.35:
        words = ever + [verb.present(number)]
    elif x < 0.65 or licensed and x >= 0.85:
        words = ever + [verb.past]
    elif x < 0.85:
        words = [HAS[number]] + _perfect_adverb(r, licensed) + [verb.pp]
    else:
        words = [r.choice((DOES[number], "did")), "not"] + (["ever"] if r.random() < 0.3 else []) + [verb.base]
    if verb.obj:
        words += _object(r, verb, number, gender, reflexive, no)
    return words


def _relative_clause(r: random.Random, head_number: str, head_person: bool, attractor: str | None = None,
                     no: float = 0.0) -> list[str]:
    """A relative clause on a head noun; `attractor` forces the number of the noun inside it."""
    rel = r.choice(("who", "that")) if head_person else "that"
    if r.random() < 0.6:  # subject gap, "that sees the dogs": the verb agrees with the head, its object may not
        if attractor is None and r.random() < 0.3:
            return [rel] + _vp(r, head_number, "i", _pick_verb(r, 0.3), reflexive=0.0)
        verb = r.choice(TRANSITIVE)
        v = r.choice(([verb.present(head_number)], [verb.past], [HAS[head_number], verb.pp]))
        nouns = THINGS if verb.obj == "thing" else r.choice((PEOPLE, ANIMALS, THINGS))
        return [rel] + v + _simple_np(r, nouns, number=attractor, adj=0.0, no=no)[0]
    # object gap, "that the dogs like": the verb agrees with the clause's own subject
    np, number, _ = _simple_np(r, r.choice((PEOPLE, ANIMALS)), number=attractor, adj=0.0, no=no)
    verb = r.choice([v for v in TRANSITIVE if v.obj == "any"])
    return [rel] + np + r.choice(([verb.present(number)], [verb.past], [HAS[number], verb.pp]))


def _subject(r: random.Random, *, modifiers: bool = True, no: float = 0.0) -> tuple[list[str], str, str]:
    """An animate subject: a name or a noun phrase, possibly modified by a PP or a relative clause."""
    if not modifiers:
        return _simple_np(r, r.choice((PEOPLE, ANIMALS)), names=0.2)
    nouns = r.choice((PEOPLE, ANIMALS))
    words, number, gender = _simple_np(r, nouns, names=0.2, no=no)
    if len(words) > 1:
        x = r.random()
        if x < 0.15:
            pp_np = _simple_np(r, r.choice((PEOPLE, ANIMALS, THINGS)), adj=0.0, no=no)[0]
            words += [r.choice(PREPOSITIONS)] + pp_np
        elif x < 0.3:
            words += _relative_clause(r, number, nouns[0].person, no=no)
    return words, number, gender


def _sentence(words: list[str], punct: str = ".") -> str:
    return " ".join([words[0][0].upper() + words[0][1:]] + words[1:]) + punct


def _question(r: random.Random) -> str:
    x = r.random()
    if x < 0.4:  # yes/no: "Has the man ever seen the dog?"
        subj, number, gender = _subject(r, modifiers=False)
        verb = _pick_verb(r)
        ever = r.choice(([], [], ["ever"], [r.choice(NEUTRAL_ADVERBS), "ever"]))
        aux, v = r.choice(((DOES[number], verb.base), ("did", verb.base), (HAS[number], verb.pp)))
        obj = _object(r, verb, number, gender) if verb.obj else []
        return _sentence([aux] + subj + ever + [v] + obj, "?")
    if x < 0.75:  # object wh: "What did the man see?"
        subj, number, _ = _subject(r, modifiers=False)
        verb = r.choice(TRANSITIVE)
        wh = "what" if verb.obj == "thing" else r.choice(("who", "what"))
        aux, v = r.choice(((DOES[number], verb.base), ("did", verb.base), (HAS[number], verb.pp)))
        return _sentence([wh, aux] + subj + [v], "?")
    return _sentence(["who"] + _vp(r, SG, "n", reflexive=0.0), "?")  # subject wh: "Who saw the dog?"


def sample_sentence(r: random.Random) -> str:
    if r.random() < 0.2:
        return _question(r)
    subj, number, gender = _subject(r, no=NO_RATE)
    return _sentence(subj + _vp(r, number, gender, licensed=subj[0] == "no", no=NO_RATE))


def generate_corpus(n_tokens: int, seed: int, exclude: set[str] | frozenset[str] = frozenset(),
                    repeated: float = 0.2, pool: int = 2000) -> list[str]:
    """Sentences sampled from the grammar, skipping those in `exclude`, until they hold `n_tokens` tokens.

    A fraction `repeated` of them is drawn from a Zipf-weighted pool of `pool` sentences, standing in for the
    boilerplate a web corpus repeats, so that exact deduplication (the suite's deduped twins) removes something.
    A sentence counts its words, its final punctuation mark and the <|endoftext|> that precedes it in training.
    """
    r = random.Random(seed)

    def fresh() -> str:
        while (s := sample_sentence(r)) in exclude:
            pass
        return s

    common = [fresh() for _ in range(pool)]
    cum_weights = list(itertools.accumulate(1 / (rank + 1) for rank in range(pool)))
    out: list[str] = []
    total = 0
    while total < n_tokens:
        s = r.choices(common, cum_weights=cum_weights)[0] if r.random() < repeated else fresh()
        out.append(s)
        total += s.count(" ") + 3
    return out


# --- Paradigms. Each returns a (good, bad) pair of word lists (and the punctuation mark) from its own generator.

WordPair = tuple[list[str], list[str], str]


def _flip(number: str) -> str:
    return PL if number == SG else SG


def _det_noun(r: random.Random, adj: float) -> WordPair:
    """A demonstrative followed by a noun of the wrong number. A past-tense verb gives no other cue."""
    number = _number(r)
    as_subject = r.random() < 0.5
    noun = r.choice(ANIMATE if as_subject else ALL_NOUNS)
    head = [r.choice(DEMONSTRATIVES[number])] + ([r.choice(ADJECTIVES)] if r.random() < adj else [])
    good, bad = head + [noun.form(number)], head + [noun.form(_flip(number))]
    if as_subject:
        verb = _pick_verb(r)
        rest = [verb.past] + (_object(r, verb, number, noun.gender, reflexive=0.0) if verb.obj else [])
        return good + rest, bad + rest, "."
    subj, _, _ = _subject(r, modifiers=False)
    verb = r.choice([v for v in TRANSITIVE if v.obj == "any" or noun in THINGS])
    start = subj + [verb.past]
    return start + good, start + bad, "."


def _agreeing_predicate(r: random.Random, number: str) -> tuple[list[str], list[str]]:
    """A present predicate for a subject of `number`, and the same with the other number's agreement."""
    verb = _pick_verb(r)
    obj = _object(r, verb, number, "i", reflexive=0.0) if verb.obj else []
    x = r.random()
    if x < 0.6:
        return [verb.present(number)] + obj, [verb.present(_flip(number))] + obj
    if x < 0.85:
        return [HAS[number], verb.pp] + obj, [HAS[_flip(number)], verb.pp] + obj
    return [DOES[number], "not", verb.base] + obj, [DOES[_flip(number)], "not", verb.base] + obj


def _sv_local(r: random.Random) -> WordPair:
    subj, number, _ = _simple_np(r, r.choice((PEOPLE, ANIMALS)), names=0.2)
    good, bad = _agreeing_predicate(r, number)
    return subj + good, subj + bad, "."


def _sv_across_pp(r: random.Random) -> WordPair:
    number = _number(r)
    subj, _, _ = _simple_np(r, r.choice((PEOPLE, ANIMALS)), number=number, adj=0.0)
    subj += [r.choice(PREPOSITIONS)] + _simple_np(r, r.choice((PEOPLE, ANIMALS, THINGS)), number=_flip(number),
                                                  adj=0.0)[0]
    good, bad = _agreeing_predicate(r, number)
    return subj + good, subj + bad, "."


def _sv_across_rc(r: random.Random) -> WordPair:
    number = _number(r)
    nouns = r.choice((PEOPLE, ANIMALS))
    subj, _, _ = _simple_np(r, nouns, number=number, adj=0.0)
    subj += _relative_clause(r, number, nouns[0].person, attractor=_flip(number))
    good, bad = _agreeing_predicate(r, number)
    return subj + good, subj + bad, "."


def _sv_question(r: random.Random) -> WordPair:
    """The auxiliary agrees with the subject that follows it: "What does the man see?"."""
    subj, number, _ = _simple_np(r, r.choice((PEOPLE, ANIMALS)), adj=0.1)
    verb = r.choice(TRANSITIVE)
    wh = "what" if verb.obj == "thing" else r.choice(("who", "what"))
    aux, v = r.choice(((DOES, verb.base), (HAS, verb.pp)))
    return [wh, aux[number]] + subj + [v], [wh, aux[_flip(number)]] + subj + [v], "?"


def _reflexive_number(r: random.Random) -> WordPair:
    subj, number, gender = _simple_np(r, r.choice((PEOPLE, ANIMALS)), names=0.2)
    verb = r.choice([v for v in TRANSITIVE if v.obj == "any"])
    start = subj + r.choice(([verb.past], [HAS[number], verb.pp]))
    wrong = "themselves" if number == SG else REFLEXIVE[gender] if gender != "n" else r.choice(("himself", "herself"))
    return start + [_reflexive(r, number, gender)], start + [wrong], "."


def _reflexive_gender(r: random.Random) -> WordPair:
    male = r.random() < 0.5
    if r.random() < 0.3:
        subj = [r.choice(MALE_NAMES if male else FEMALE_NAMES)]
    else:
        noun = r.choice([n for n in PEOPLE if n.gender == ("m" if male else "f")])
        subj = [_det(r, SG)] + ([r.choice(ADJECTIVES)] if r.random() < 0.2 else []) + [noun.sg]
    verb = r.choice([v for v in TRANSITIVE if v.obj == "any"])
    start = subj + r.choice(([verb.past], ["has", verb.pp]))
    good, bad = ("himself", "herself") if male else ("herself", "himself")
    return start + [good], start + [bad], "."


def _irregular(r: random.Random) -> WordPair:
    """The past where the tense needs it, the participle after 'has': both directions, so that neither form is
    favoured by itself: "The man saw the dog." vs "The man seen the dog.", "The man has seen the dog." vs "... saw"."""
    subj, number, gender = _subject(r, modifiers=False)
    if r.random() < 0.5:
        verb = r.choice([v for v in IRREGULAR if v.pp != v.base])  # "The men run." is a fine present tense
        obj = _object(r, verb, number, gender) if verb.obj else []
        return subj + [verb.past] + obj, subj + [verb.pp] + obj, "."
    verb = r.choice(IRREGULAR)
    obj = _object(r, verb, number, gender) if verb.obj else []
    return subj + [HAS[number], verb.pp] + obj, subj + [HAS[number], verb.past] + obj, "."


def _npi_swap(r: random.Random, partner: str) -> WordPair:
    """'ever' in a relative clause whose subject is "no ...", licensed there, swapped with `partner` in the main
    clause, where nothing licenses it: "The dog that no cat has ever seen has not found the bird." vs "The dog that no
    cat has not seen has ever found the bird.".

    The two sentences have the same words, and the two slots the same surroundings ("has/have _ <participle>", the
    auxiliaries' numbers and the verbs drawn alike), so an untrained model, a random bigram model, prefers either
    sentence equally often. A licensor next to "ever" in the good sentence only ("has not ever" vs "has really ever")
    is a fixed bigram such a model likes or not, scoring anywhere from 0 to 1. The corpus never puts "ever" in a
    relative clause, so a model must generalise the licensing from main clauses.
    """
    number, inner_number = _number(r), _number(r)
    nouns = r.choice((PEOPLE, ANIMALS))
    head = [_det(r, number), r.choice(nouns).form(number), r.choice(("who", "that")) if nouns[0].person else "that"]
    inner = ["no", r.choice(r.choice((PEOPLE, ANIMALS))).form(inner_number), HAS[inner_number]]
    verbs = [v for v in TRANSITIVE if v.obj == "any"]  # the relative clause's gap is the animate head
    rc_verb, verb = r.choice(verbs), r.choice(verbs)  # drawn alike, so that neither slot's surroundings differ
    obj = _object(r, verb, number, "i", reflexive=0.0)
    start = head + inner
    return (start + ["ever", rc_verb.pp, HAS[number], partner, verb.pp] + obj,
            start + [partner, rc_verb.pp, HAS[number], "ever", verb.pp] + obj, ".")


def _npi_negation(r: random.Random) -> WordPair:
    """'ever' goes with the negation of its own clause: the good sentence negates the main clause ("not", "never")
    and has "ever" with the relative clause's "no"; the bad one has the negation in the relative clause and "ever"
    in the main clause, which has none."""
    return _npi_swap(r, r.choice(("not", "never")))


def _npi_scope(r: random.Random) -> WordPair:
    """'ever' is licensed by "no" inside a relative clause only within that clause, although "no" precedes it in
    both sentences: "The dog that no cat has ever seen has already found the bird." vs "The dog that no cat has
    already seen has ever found the bird."."""
    return _npi_swap(r, r.choice(NEUTRAL_ADVERBS))


def _tense(r: random.Random, number: str) -> Callable[[Verb], list[str]]:
    return r.choice((lambda v: [v.present(number)], lambda v: [v.past], lambda v: [HAS[number], v.pp]))


def _transitivity(r: random.Random) -> WordPair:
    """A transitive verb needs an object and an intransitive one refuses it, half the pairs each way:
    "The man admired the dog." vs "The man slept the dog.", "The man slept." vs "The man admired."."""
    subj, number, gender = _subject(r, modifiers=False)
    tr, intr = r.choice([v for v in TRANSITIVE if v.strict]), r.choice([v for v in INTRANSITIVE if v.strict])
    form = _tense(r, number)
    if r.random() < 0.5:
        obj = _object(r, tr, number, gender)
        return subj + form(tr) + obj, subj + form(intr) + obj, "."
    return subj + form(intr), subj + form(tr), "."


def _relative_clause_gap(r: random.Random) -> WordPair:
    """A relative clause's gap decides its verb's transitivity, and the other verb takes the other frame. Half the
    pairs have an object gap: "The man that the dogs admired slept." vs "The man that the dogs slept admired.";
    half a subject gap: "The man that slept admired the dog." vs "The man that admired slept the dog."."""
    number = _number(r)
    nouns = r.choice((PEOPLE, ANIMALS))
    head, _, _ = _simple_np(r, nouns, number=number)
    start = head + [r.choice(("who", "that")) if nouns[0].person else "that"]
    tr, intr = r.choice([v for v in TRANSITIVE if v.strict]), r.choice([v for v in INTRANSITIVE if v.strict])
    if r.random() < 0.5:
        inner, inner_number, _ = _simple_np(r, r.choice((PEOPLE, ANIMALS)), adj=0.0)
        inner_form, form = _tense(r, inner_number), _tense(r, number)
        start += inner
        return start + inner_form(tr) + form(intr), start + inner_form(intr) + form(tr), "."
    inner_form, form = _tense(r, number), _tense(r, number)
    obj = _object(r, tr, number, "i", reflexive=0.0)
    return start + inner_form(intr) + form(tr) + obj, start + inner_form(tr) + form(intr) + obj, "."


def _wh_verb_form(r: random.Random) -> WordPair:
    """The auxiliary of a question picks the verb's form across the subject: "What did the man see?" vs "... saw?",
    and "What has the man seen?" vs "... see?", so the bare form is right in half the pairs and wrong in the rest."""
    subj, number, _ = _subject(r, modifiers=False)
    if r.random() < 0.5:
        verb = r.choice(DO_SUPPORT)
        aux, good, bad = "did", verb.base, verb.past
    else:
        verb = r.choice([v for v in TRANSITIVE if v.pp != v.base])
        aux, good, bad = HAS[number], verb.pp, verb.base
    wh = "what" if verb.obj == "thing" else r.choice(("who", "what"))
    return [wh, aux] + subj + [good], [wh, aux] + subj + [bad], "?"


class Paradigm(NamedTuple):
    name: str
    phenomenon: str  # BLiMP's linguistics_term
    field: str
    # Balanced: the words that differ between good and bad (and their neighbours) are good as often as bad across
    # the pairs. An untrained model is a random bigram model with fixed lexical preferences, so it scores every
    # paradigm near 0.5.
    make: Callable[[random.Random], WordPair]


PARADIGMS = [
    Paradigm("determiner_noun_agreement", "determiner_noun_agreement", "morphology", lambda r: _det_noun(r, 0.0)),
    Paradigm("determiner_noun_agreement_with_adjective", "determiner_noun_agreement", "morphology",
             lambda r: _det_noun(r, 1.0)),
    Paradigm("subject_verb_agreement_local", "subject_verb_agreement", "morphology", _sv_local),
    Paradigm("subject_verb_agreement_across_pp", "subject_verb_agreement", "morphology", _sv_across_pp),
    Paradigm("subject_verb_agreement_across_relative_clause", "subject_verb_agreement", "morphology", _sv_across_rc),
    Paradigm("subject_aux_agreement_question", "subject_verb_agreement", "morphology", _sv_question),
    Paradigm("reflexive_number_agreement", "anaphor_agreement", "morphology", _reflexive_number),
    Paradigm("reflexive_gender_agreement", "anaphor_agreement", "morphology", _reflexive_gender),
    Paradigm("irregular_past_participle", "irregular_forms", "morphology", _irregular),
    Paradigm("transitivity", "argument_structure", "syntax", _transitivity),
    Paradigm("relative_clause_gap", "filler_gap_dependency", "syntax", _relative_clause_gap),
    Paradigm("wh_question_verb_form", "question_formation", "syntax", _wh_verb_form),
    Paradigm("npi_licensing_negation", "npi_licensing", "semantics", _npi_negation),
    Paradigm("npi_licensing_scope", "npi_licensing", "semantics", _npi_scope),
]


def generate_paradigms(seed: int = TASK_SEED, n_pairs: int = N_PAIRS) -> dict[str, list[dict]]:
    """BLiMP-format minimal pairs, `n_pairs` per paradigm, with distinct grammatical sentences.

    Each paradigm draws from its own generator, so the first k pairs do not depend on n_pairs or on other paradigms.
    """
    out = {}
    for p in PARADIGMS:
        r = random.Random(f"{seed}:{p.name}")
        rows: list[dict] = []
        seen: set[str] = set()
        while len(rows) < n_pairs:
            good_words, bad_words, punct = p.make(r)
            good, bad = _sentence(good_words, punct), _sentence(bad_words, punct)
            if good in seen:
                continue
            seen.add(good)
            rows.append({
                "sentence_good": good, "sentence_bad": bad, "field": p.field, "linguistics_term": p.phenomenon,
                "UID": p.name, "simple_LM_method": True, "one_prefix_method": False, "two_prefix_method": False,
                "lexically_identical": sorted(good.lower().split()) == sorted(bad.lower().split()),
                "pairID": str(len(rows)),
            })
        out[p.name] = rows
    return out


@functools.lru_cache(maxsize=4)
def paradigm_sentences(seed: int = TASK_SEED, n_pairs: int = N_PAIRS) -> frozenset[str]:
    """The grammatical sentences of the paradigms: what a suite's corpus must never contain."""
    return frozenset(row["sentence_good"] for rows in generate_paradigms(seed, n_pairs).values() for row in rows)


def heldout_sentences(seed: int = TASK_SEED, n: int = N_HELDOUT) -> list[str]:
    """Distinct sentences drawn as the corpus draws them, none a paradigm's: held-out text whose loss tracks
    training (every suite's corpus excludes them)."""
    r = random.Random(f"{seed}:heldout")
    paradigms = paradigm_sentences(seed)
    found: dict[str, None] = {}
    while len(found) < n:
        if (s := sample_sentence(r)) not in paradigms:
            found[s] = None
    return list(found)


def kept_out(seed: int = TASK_SEED) -> frozenset[str]:
    """What a suite's corpus must never contain: the paradigms' grammatical sentences and the held-out text."""
    return paradigm_sentences(seed) | set(heldout_sentences(seed))


def write_heldout(task_dir: str | Path, seed: int = TASK_SEED, n: int = N_HELDOUT) -> Path:
    """Write the `minigrammar_heldout` perplexity task (one sentence per document) through taskfiles."""
    header = "Generated by `python -m trajectories.demo.grammar --write-heldout`; edit trajectories/demo/grammar.py."
    return taskfiles.write_text_task(Path(task_dir), "minigrammar_heldout", heldout_sentences(seed, n), header,
                                     source="trajectories.demo.grammar.heldout_sentences (never in a suite's corpus)")


def write_tasks(task_dir: str | Path, seed: int = TASK_SEED, n_pairs: int = N_PAIRS) -> Path:
    """Write the `minigrammar` family (one lm-eval task per paradigm) through the same writer as `tasks add`."""
    paradigms = generate_paradigms(seed, n_pairs)
    files = [taskfiles.TaskFile(f"minigrammar_{p.name}", p.name, p.phenomenon,
                                [row | {"choices": [row["sentence_good"], row["sentence_bad"]]} for row in rows],
                                field=p.field)
             for p in PARADIGMS for rows in [paradigms[p.name]]]
    header = "Generated by `python -m trajectories.demo.grammar --write-tasks`; edit trajectories/demo/grammar.py."
    return taskfiles.write_family(Path(task_dir), "minigrammar", files, False, header)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m trajectories.demo.grammar", description=__doc__.split("\n\n")[0])
    ap.add_argument("--write-tasks", metavar="DIR", help="write the lm-eval tasks (YAML + jsonl) into DIR")
    ap.add_argument("--write-heldout", metavar="DIR", help="write the held-out text's perplexity task into DIR")
    ap.add_argument("--sample", type=int, metavar="N", help="print N corpus sentences")
    ap.add_argument("--seed", type=int, default=TASK_SEED)
    args = ap.parse_args(argv)
    if args.write_tasks:
        print(write_tasks(args.write_tasks, args.seed))
    if args.write_heldout:
        print(write_heldout(args.write_heldout, args.seed))
    if args.sample:
        print("\n".join(generate_corpus(args.sample * 12, args.seed)[: args.sample]))


if __name__ == "__main__":
    main()
