"""A small, deterministic synthetic world and English-like text rendered from it.

The same world serves three stages:

* pretraining: :func:`render_document` writes profiles, town and pet notes, short
  stories, dialogues, register pages, question/answer sheets and arithmetic drills;
* supervised fine-tuning and evaluation: :meth:`World.facts` lists every
  single-answer fact, :func:`question_for` phrases it as a question (the same
  phrasings the pretraining corpus uses in its question/answer sheets), and
  :func:`arithmetic_fact` gives the arithmetic family.

Everything is driven by explicit ``random.Random`` instances (no global state, no
iteration over ``set``s of strings), so a seed always yields the same world and text.
The vocabulary is bounded: ~350 template/attribute word types plus ~340 generated
names (built from a fixed syllable inventory, never equal to a template word).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

GENERATOR_NAME = "effbench-synthetic-world"
GENERATOR_VERSION = "1.2"
#: The world is fixed independently of the corpus seed, so that corpora, SFT tasks
#: and evaluations made with different seeds all talk about the same entities.
DEFAULT_WORLD_SEED = 20240917

# --------------------------------------------------------------------------- lexicon
_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "th", "sh"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]
_CODAS = ["", "", "", "n", "r", "l", "s", "m"]
_VOWEL_RUN = re.compile("[aeiouy]{3}")
_TOWN_SUFFIXES = ["ton", "ford", "by", "wick", "dale", "mouth", "field", "stead"]

COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "white", "black",
           "grey", "brown", "pink", "silver"]
FOODS = ["bread", "soup", "rice", "apples", "cheese", "fish", "honey", "pears", "beans",
         "noodles", "cake", "carrots", "plums", "eggs", "corn", "nuts"]
JOBS = ["baker", "farmer", "teacher", "doctor", "painter", "builder", "sailor", "singer",
        "potter", "weaver", "miner", "cook", "nurse", "tailor", "fisher", "smith"]
HOBBIES = ["singing", "swimming", "reading", "running", "dancing", "fishing", "painting",
           "climbing", "cooking", "knitting", "drawing", "walking"]
SPECIES = ["cat", "dog", "horse", "goat", "rabbit", "parrot", "duck", "pig", "sheep",
           "owl", "fox", "mouse"]
FEATURES = ["sea", "hills", "river", "forest", "lake", "mountains", "marsh", "valley"]
REGIONS = ["north", "south", "east", "west", "middle"]
_FEATURE_PHRASE = {"sea": "by the sea", "hills": "among the hills", "river": "on a river",
                   "forest": "at the edge of a forest", "lake": "beside a lake",
                   "mountains": "under the mountains", "marsh": "next to a marsh",
                   "valley": "in a green valley"}
_TIMES = ["One morning", "One evening", "Last spring", "On a cold day", "In the summer",
          "Early one day", "Late at night", "Once", "In the autumn", "On a Monday",
          "After lunch", "Long ago"]
_WEATHER = ["The sun was bright.", "It was raining.", "The wind was strong.",
            "Snow lay on the ground.", "The sky was grey.", "It was a warm day."]
_GOODS = ["a basket", "a new hat", "some rope", "a lamp", "a blanket", "some paper",
          "a small bell", "a cup"]
_THINGS = ["coins", "stones", "books", "shells", "apples", "eggs"]
_NUM_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
              "nine", "ten", "eleven", "twelve"]


# --------------------------------------------------------------------------- entities
@dataclass
class Person:
    name: str
    gender: str  # "f" or "m" (pronouns only)
    age: int
    town: str
    colour: str
    food: str
    job: str
    hobby: str
    friend: str = ""
    pet: str = ""  # name of an Animal or ""

    @property
    def he(self) -> str:
        return "She" if self.gender == "f" else "He"

    @property
    def his(self) -> str:
        return "Her" if self.gender == "f" else "His"


@dataclass
class Animal:
    name: str
    species: str
    colour: str
    age: int
    owner: str


@dataclass
class Town:
    name: str
    feature: str
    region: str
    bridges: int
    mayor: str = ""
    residents: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Fact:
    """One single-answer fact: ``relation(subject) == answer``.

    ``pool`` is the category the answer comes from (for multiple-choice distractors).
    """

    kind: str  # "person" | "animal" | "town"
    subject: str
    relation: str
    answer: str
    pool: tuple[str, ...]


@dataclass
class World:
    seed: int
    people: list[Person]
    animals: list[Animal]
    towns: list[Town]
    person: dict[str, Person] = field(init=False)
    animal: dict[str, Animal] = field(init=False)
    town: dict[str, Town] = field(init=False)
    _facts: list[Fact] | None = field(init=False, default=None, repr=False)
    _by_subject: dict[str, list[Fact]] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.person = {p.name: p for p in self.people}
        self.animal = {a.name: a for a in self.animals}
        self.town = {t.name: t for t in self.towns}

    def facts(self) -> list[Fact]:
        """Every single-answer fact stated somewhere in the corpus, in a fixed order."""
        if self._facts is None:
            self._facts = self._make_facts()
            by: dict[str, list[Fact]] = {}
            for f in self._facts:
                by.setdefault(f.subject, []).append(f)
            self._by_subject = by
        return self._facts

    def facts_about(self, name: str) -> list[Fact]:
        self.facts()
        return self._by_subject.get(name, [])

    def _make_facts(self) -> list[Fact]:
        pn = tuple(p.name for p in self.people)
        an = tuple(a.name for a in self.animals)
        tn = tuple(t.name for t in self.towns)
        ages = tuple(str(a) for a in range(18, 90))
        out: list[Fact] = []
        for p in self.people:
            out += [Fact("person", p.name, "colour", p.colour, tuple(COLOURS)),
                    Fact("person", p.name, "town", p.town, tn),
                    Fact("person", p.name, "food", p.food, tuple(FOODS)),
                    Fact("person", p.name, "job", p.job, tuple(JOBS)),
                    Fact("person", p.name, "hobby", p.hobby, tuple(HOBBIES)),
                    Fact("person", p.name, "age", str(p.age), ages),
                    Fact("person", p.name, "friend", p.friend, pn)]
            if p.pet:
                out.append(Fact("person", p.name, "pet", p.pet, an))
        for a in self.animals:
            out += [Fact("animal", a.name, "species", a.species, tuple(SPECIES)),
                    Fact("animal", a.name, "colour", a.colour, tuple(COLOURS)),
                    Fact("animal", a.name, "owner", a.owner, pn)]
        for t in self.towns:
            out += [Fact("town", t.name, "feature", t.feature, tuple(FEATURES)),
                    Fact("town", t.name, "region", t.region, tuple(REGIONS)),
                    Fact("town", t.name, "bridges", str(t.bridges),
                         tuple(str(i) for i in range(2, 10))),
                    Fact("town", t.name, "mayor", t.mayor, pn)]
        return out


def _make_names(rng: random.Random, n: int, syllables: tuple[int, int], taken: set[str],
                suffixes: list[str] | None = None) -> list[str]:
    names: list[str] = []
    while len(names) < n:
        k = rng.randint(*syllables)
        stem = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(k))
        stem += rng.choice(suffixes) if suffixes else rng.choice(_CODAS)
        name = stem.capitalize()
        if (name not in taken and 4 <= len(name) <= 11 and name.lower() not in _reserved_words()
                and not _VOWEL_RUN.search(name.lower())):
            taken.add(name)
            names.append(name)
    return names


# words the document functions below use inline (kept here so names avoid them)
_EXTRA_TEXT = """This is Let me tell you about from years old and lives in People who live include
Among the people of are In you can meet works there as likes Here is the lives takes for a walk
every day sleeps in house of Every evening gives some food It Its left took along went to visit
best friend met there town They ate together because favourite talked about which loves bought
colour shade Later walked home over one bridges At night back Where do live What do How old are
your fun pet Yes called asked said I am It is enjoy Question Answer had got more so now has Number
of people living Name Age Town Job Colour Food Hobby Friend She He Her His her his she he"""
_EXTRA_RESERVED = ["bone", "done", "fine", "line", "mine", "more", "note", "rose", "tone", "sole",
                   "pole", "role", "pure", "sure", "dose", "nose", "lose", "pose", "some", "same",
                   "name", "game", "tame", "lame", "time", "tire", "fire", "sire", "sale", "tale",
                   "male", "pale", "vale", "rule", "mule", "tune", "dune", "zone", "gone",
                   "lone", "tore", "bore", "lore", "sore", "fore", "wore", "thin", "then",
                   "than", "this", "thus", "this", "shin", "shun", "shoe", "shame", "shine",
                   "shore", "soup", "pour", "tour", "four", "sour", "mouse", "house"]


def _reserved_words() -> frozenset[str]:
    """Lower-case words used by the templates and lexicon: names must not collide."""
    global _RESERVED
    if _RESERVED is None:
        strings = [*COLOURS, *FOODS, *JOBS, *HOBBIES, *SPECIES, *FEATURES, *REGIONS, *_TIMES,
                   *_WEATHER, *_GOODS, *_THINGS, *_NUM_WORDS, *_FEATURE_PHRASE.values(),
                   *_CARD_HEADS, *(k for k, _ in _CARD_FIELDS), *_EXTRA_TEXT]
        for table in (_STATEMENTS, QUESTIONS):
            for templates in table.values():
                strings += templates
        words = {w.lower() for s in strings for w in re.findall(r"[A-Za-z]+", s)}
        _RESERVED = frozenset(words | set(_EXTRA_RESERVED))
    return _RESERVED


_RESERVED: frozenset[str] | None = None


def build_world(seed: int = DEFAULT_WORLD_SEED, *, n_people: int = 240, n_animals: int = 80,
                n_towns: int = 24) -> World:
    """Build the world for ``seed``: people, their pets and the towns they live in."""
    rng = random.Random(f"world:{seed}")
    taken: set[str] = set()
    town_names = _make_names(rng, n_towns, (1, 1), taken, _TOWN_SUFFIXES)
    person_names = _make_names(rng, n_people, (1, 2), taken)
    animal_names = _make_names(rng, n_animals, (1, 2), taken, ["", "y", "o", "ie"])
    towns = [Town(name, rng.choice(FEATURES), rng.choice(REGIONS), rng.randint(2, 9))
             for name in town_names]
    people = [Person(name, rng.choice("fm"), rng.randint(18, 89), rng.choice(town_names),
                     rng.choice(COLOURS), rng.choice(FOODS), rng.choice(JOBS),
                     rng.choice(HOBBIES)) for name in person_names]
    for i, p in enumerate(people):
        j = rng.randrange(n_people - 1)
        p.friend = person_names[j if j < i else j + 1]
    owners = rng.sample(people, n_animals)
    animals = []
    for name, owner in zip(animal_names, owners):
        owner.pet = name
        animals.append(Animal(name, rng.choice(SPECIES), rng.choice(COLOURS),
                              rng.randint(1, 15), owner.name))
    by_town = {t: [p.name for p in people if p.town == t] for t in town_names}
    for t in towns:
        t.residents = by_town[t.name]
        t.mayor = rng.choice(t.residents) if t.residents else rng.choice(person_names)
    return World(seed, people, animals, towns)


# --------------------------------------------------------------------------- sentences
# Statement templates. {S}: subject at sentence start (name, or pronoun in a profile),
# {SP}: possessive at sentence start, {s}: the name, {v}: the value.
_STATEMENTS: dict[str, list[str]] = {
    "colour": ["{SP} favourite colour is {v}.", "{S} likes the colour {v} best.",
               "The colour that {s} loves most is {v}.", "{S} always wears something {v}.",
               "Of all colours, {s} likes {v} the most.", "{S} painted the door {v}, {SPL} favourite colour."],
    "town": ["{S} lives in {v}.", "{SP} home is in the town of {v}.",
             "{S} has a house in {v}.", "The home town of {s} is {v}.",
             "{S} grew up in {v} and still lives there."],
    "food": ["{SP} favourite food is {v}.", "{S} likes to eat {v} more than anything.",
             "For dinner, {s} always wants {v}.", "{S} loves {v}.",
             "Nothing makes {s} happier than a plate of {v}."],
    "job": ["{S} works as a {v}.", "{SP} job is {v}.", "By trade, {s} is a {v}.",
            "{S} is a {v}."],
    "hobby": ["In free time, {s} enjoys {v}.", "{SP} hobby is {v}.",
              "{S} likes {v} on weekends.", "When work is done, {s} spends the evening {v}."],
    "age": ["{S} is {v} years old.", "{SP} age is {v}.", "{S} turned {v} this year."],
    "friend": ["{SP} best friend is {v}.", "{S} and {v} are best friends.",
               "The best friend of {s} is {v}."],
    "pet": ["{S} has a pet called {v}.", "{SP} pet is named {v}.", "{S} keeps a pet named {v}."],
    "species": ["{S} is a {v}.", "{s} the {v} is well known.", "{S} is a small {v}."],
    "acolour": ["{S} is {v}.", "The coat of {s} is {v}.", "{SP} colour is {v}."],
    "aage": ["{S} is {v} years old.", "{SP} age is {v}."],
    "owner": ["{S} belongs to {v}.", "The owner of {s} is {v}.", "{v} owns {s}."],
    "feature": ["{s} lies {f}.", "The town of {s} is {f}.", "{s} is a town {f}."],
    "region": ["{s} is in the {v} of the land.", "You will find {s} in the {v}.",
               "{s} lies in the {v}."],
    "bridges": ["{s} has {v} bridges.", "There are {v} bridges in {s}.",
                "The town of {s} has {v} bridges."],
    "mayor": ["The mayor of {s} is {v}.", "{v} is the mayor of {s}.",
              "{s} is led by its mayor, {v}."],
}

#: Question phrasings per relation (shared by the corpus, the SFT task and the MC eval).
QUESTIONS: dict[str, list[str]] = {
    "colour": ["What is the favourite colour of {s}?", "Which colour does {s} like best?"],
    "town": ["Where does {s} live?", "In which town does {s} live?"],
    "food": ["What is the favourite food of {s}?", "What does {s} like to eat most?"],
    "job": ["What is the job of {s}?", "What does {s} do for work?"],
    "hobby": ["What is the hobby of {s}?", "What does {s} enjoy in free time?"],
    "age": ["How old is {s}?", "What is the age of {s}?"],
    "friend": ["Who is the best friend of {s}?", "Who is {s}'s best friend?"],
    "pet": ["What is the name of the pet of {s}?", "What is {s}'s pet called?"],
    "species": ["What kind of animal is {s}?", "What animal is {s}?"],
    "animal.colour": ["What colour is {s}?", "Which colour is the animal {s}?"],
    "owner": ["Who owns {s}?", "Who is the owner of {s}?"],
    "feature": ["What is the town of {s} near?", "What lies next to {s}?"],
    "region": ["In which part of the land is {s}?", "Which part of the land is {s} in?"],
    "bridges": ["How many bridges does {s} have?", "How many bridges are in {s}?"],
    "mayor": ["Who is the mayor of {s}?", "Who leads the town of {s}?"],
}


def question_for(fact: Fact, rng: random.Random) -> str:
    key = "animal.colour" if (fact.kind == "animal" and fact.relation == "colour") else fact.relation
    return rng.choice(QUESTIONS[key]).format(s=fact.subject)


def statement_for(fact: Fact, rng: random.Random) -> str:
    """One sentence stating ``fact`` with the subject's name."""
    key = fact.relation
    if fact.kind == "animal" and key in ("colour",):
        key = "acolour"
    s = fact.subject
    return _fill(rng.choice(_STATEMENTS[key]), s, s, s + "'s", fact.answer)


def _fill(tpl: str, s: str, S: str, SP: str, v: str) -> str:
    f = _FEATURE_PHRASE.get(v, "")
    SPL = SP.lower() if SP in ("His", "Her", "Its") else SP
    out = _articles(tpl.format(s=s, S=S, SP=SP, SPL=SPL, v=v, f=f))
    return out[0].upper() + out[1:]


def _articles(text: str) -> str:
    """'a orange' -> 'an orange' (the only article rule the templates need)."""
    for v in "aeiou":
        text = text.replace(f" a {v}", f" an {v}")
    return text


def arithmetic_fact(rng: random.Random) -> tuple[str, str]:
    """A small arithmetic question and its answer: ('What is 7 plus 5?', '12')."""
    op = rng.random()
    if op < 0.55:
        a, b = rng.randint(0, 20), rng.randint(0, 20)
        return f"What is {a} plus {b}?", str(a + b)
    if op < 0.85:
        a = rng.randint(0, 20)
        b = rng.randint(0, a)
        return f"What is {a} minus {b}?", str(a - b)
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    return f"What is {a} times {b}?", str(a * b)


# --------------------------------------------------------------------------- documents
def _person_sentences(w: World, p: Person, rng: random.Random, k: int,
                      skip: tuple[str, ...] = ()) -> list[str]:
    rels = [r for r in ["colour", "town", "food", "job", "hobby", "age", "friend"]
            + (["pet"] if p.pet else []) if r not in skip]
    rng.shuffle(rels)
    out = []
    for i, rel in enumerate(rels[:k]):
        use_pronoun = i > 0 and rng.random() < 0.6
        S = p.he if use_pronoun else p.name
        SP = p.his if use_pronoun else p.name + "'s"
        v = str(getattr(p, rel))
        out.append(_fill(rng.choice(_STATEMENTS[rel]), p.name, S, SP, v))
    return out


def _doc_profile(w: World, rng: random.Random) -> str:
    p = rng.choice(w.people)
    intro, told = rng.choice([(f"This is {p.name}.", ()),
                              (f"Let me tell you about {p.name}.", ()),
                              (_articles(f"{p.name} is a {p.job} from {p.town}."), ("job", "town")),
                              (f"{p.name} is {p.age} years old and lives in {p.town}.", ("age", "town"))])
    body = _person_sentences(w, p, rng, rng.randint(3, 6), skip=told)
    return " ".join([intro] + body)


def _doc_town(w: World, rng: random.Random) -> str:
    t = rng.choice(w.towns)
    rels = ["feature", "region", "bridges", "mayor"]
    rng.shuffle(rels)
    sents = [_fill(rng.choice(_STATEMENTS[r]), t.name, t.name, t.name + "'s",
                   str(getattr(t, r))) for r in rels[:rng.randint(2, 4)]]
    if t.residents:
        some = rng.sample(t.residents, min(len(t.residents), rng.randint(2, 4)))
        lead = rng.choice(["People who live in {t} include", "Among the people of {t} are",
                           "In {t} you can meet"]).format(t=t.name)
        sents.append(f"{lead} {', '.join(some[:-1])} and {some[-1]}." if len(some) > 1
                     else f"{lead} {some[0]}.")
        q = w.person[rng.choice(some)]
        sents.append(rng.choice([f"{q.name} works there as a {q.job}.",
                                 f"{q.name} is {q.age} years old.",
                                 f"{q.name} likes {q.food}."]))
    return " ".join(sents)


def _doc_pet(w: World, rng: random.Random) -> str:
    a = rng.choice(w.animals)
    o = w.person[a.owner]
    it = "It"
    sents = [rng.choice([f"{a.name} is a {a.species}.", f"Here is {a.name}, a {a.colour} {a.species}.",
                         f"{a.name} the {a.species} lives in {o.town}."])]
    rels = [("acolour", a.colour), ("aage", str(a.age)), ("owner", a.owner)]
    rng.shuffle(rels)
    for rel, v in rels:
        sents.append(_fill(rng.choice(_STATEMENTS[rel]), a.name,
                           it if rng.random() < 0.4 else a.name,
                           "Its" if rng.random() < 0.4 else a.name + "'s", v))
    sents.append(rng.choice([f"{o.name} takes {a.name} for a walk every day.",
                             f"{a.name} sleeps in the house of {o.name}.",
                             f"Every evening {o.name} gives {a.name} some food."]))
    return " ".join(sents)


def _doc_story(w: World, rng: random.Random) -> str:
    p = rng.choice(w.people)
    f = w.person[p.friend]
    t2 = w.town[f.town]
    s = [f"{rng.choice(_TIMES)}, {p.name} the {p.job} left {p.town}.", rng.choice(_WEATHER)]
    if p.pet and rng.random() < 0.7:
        a = w.animal[p.pet]
        s.append(f"{p.he} took {p.his.lower()} {a.species} {a.name} along.")
    s.append(rng.choice([f"{p.he} went to {t2.name} to visit {f.name}, {p.his.lower()} best friend.",
                         f"In {t2.name}, {p.he.lower()} met {p.his.lower()} best friend {f.name}."]))
    s.append(rng.choice([f"{f.name} works as a {f.job} there.", f"{f.name} is {f.age} years old.",
                         f"The town of {t2.name} is {_FEATURE_PHRASE[t2.feature]}."]))
    s.append(rng.choice([f"They ate {p.food} together, because {p.food} is the favourite food of {p.name}.",
                         f"They shared some {f.food}, the favourite food of {f.name}.",
                         f"They talked about {p.hobby}, which {p.name} loves."]))
    s.append(rng.choice([f"{p.name} bought {rng.choice(_GOODS)} in {rng.choice(['the colour', 'a shade of'])} {p.colour}.",
                         f"Later {p.he.lower()} walked home over one of the {t2.bridges} bridges of {t2.name}.",
                         f"At night {p.name} went back to {p.town}."]))
    return " ".join(s)


def _doc_dialogue(w: World, rng: random.Random) -> str:
    a = rng.choice(w.people)
    b = w.person[a.friend]
    lines = []
    pairs = [("Where do you live?", f"I live in {b.town}."),
             ("What do you do?", f"I am a {b.job}."),
             ("What is your favourite colour?", f"It is {b.colour}."),
             ("How old are you?", f"I am {b.age}."),
             ("What do you like to eat?", f"I like {b.food}."),
             ("What do you do for fun?", f"I enjoy {b.hobby}.")]
    if b.pet:
        pairs.append(("Do you have a pet?", f"Yes, a {w.animal[b.pet].species} called {b.pet}."))
    rng.shuffle(pairs)
    for q, ans in pairs[:rng.randint(2, 4)]:
        lines.append(f"{a.name} asked {b.name}: \"{q}\"")
        lines.append(f"{b.name} said: \"{ans}\"")
    return "\n".join(lines)


_CARD_HEADS = ["Town register.", "Notes from the town hall.", "List of people.",
               "From the record book."]
_CARD_FIELDS = [("Name", None), ("Age", "age"), ("Town", "town"), ("Job", "job"),
                ("Colour", "colour"), ("Food", "food"), ("Hobby", "hobby"), ("Friend", "friend")]


def _doc_records(w: World, rng: random.Random) -> str:
    """A register page: a few people as short field lists, sometimes a census line."""
    head = rng.choice(_CARD_HEADS)
    lines = [head]
    fields = _CARD_FIELDS[1:]
    rng.shuffle(fields)
    fields = [_CARD_FIELDS[0]] + fields[:rng.randint(2, 4)]
    for p in rng.sample(w.people, rng.randint(2, 4)):
        lines.append("; ".join(f"{k}: {p.name if a is None else getattr(p, a)}" for k, a in fields) + ".")
    if rng.random() < 0.4:
        t = rng.choice(w.towns)
        lines.append(f"Number of people living in {t.name}: {len(t.residents)}.")
    return "\n".join(lines)


def _doc_qa(w: World, rng: random.Random) -> str:
    facts = w.facts()
    lines = []
    if rng.random() < 0.5:  # in-context: a profile, then questions about it
        p = rng.choice(w.people)
        lines.append(" ".join(_person_sentences(w, p, rng, 5)))
        pool = w.facts_about(p.name)
        chosen = rng.sample(pool, min(3, len(pool)))
    else:
        chosen = [rng.choice(facts) for _ in range(rng.randint(3, 5))]
    for f in chosen:
        lines.append(f"Question: {question_for(f, rng)}\nAnswer: {f.answer}.")
    return "\n".join(lines)


def _doc_math(w: World, rng: random.Random) -> str:
    lines = []
    style = rng.randrange(3)
    for _ in range(rng.randint(4, 8)):
        q, a = arithmetic_fact(rng)
        expr = q[len("What is "):-1]
        if style == 0:
            lines.append(f"Question: {q}\nAnswer: {a}.")
        elif style == 1:
            lines.append(rng.choice([f"{expr} is {a}.", f"{expr} makes {a}.", f"{expr} equals {a}."]).capitalize())
        else:
            sym = expr.replace(" plus ", " + ").replace(" minus ", " - ").replace(" times ", " * ")
            lines.append(f"{sym} = {a}")
    if style == 1 and rng.random() < 0.5:
        p = rng.choice(w.people)
        n = rng.randint(2, 12)
        m = rng.randint(1, 12)
        lines.append(f"{p.name} had {_NUM_WORDS[n]} {rng.choice(_THINGS)} and got {m} more, so now {p.he.lower()} has {n + m}.")
    return "\n".join(lines)


# Question/answer sheets are 45 % of the documents: the multiple-choice eval asks in their
# format, and a tiny model trained for ~150 steps needs to see it often (1.0: 0.15; 1.1: 0.25, at
# which only one of the three served attention variants passed the relation task).
_DOC_KINDS = [(_doc_profile, 0.12), (_doc_town, 0.06), (_doc_pet, 0.06), (_doc_story, 0.09),
              (_doc_dialogue, 0.08), (_doc_records, 0.06), (_doc_qa, 0.45), (_doc_math, 0.08)]


def render_document(world: World, rng: random.Random) -> str:
    """One document (a few sentences to a short paragraph) sampled with ``rng``."""
    x = rng.random()
    fn = _DOC_KINDS[-1][0]
    for kind, weight in _DOC_KINDS:
        if x < weight:
            fn = kind
            break
        x -= weight
    return _articles(fn(world, rng))


def iter_documents(world: World, seed: int, stream: str):
    """An endless, deterministic stream of documents for ``(seed, stream)``."""
    rng = random.Random(f"docs:{seed}:{stream}")
    while True:
        yield render_document(world, rng)
