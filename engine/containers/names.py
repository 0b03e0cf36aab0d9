"""Random container names in Docker's "adjective_surname" style."""

from __future__ import annotations

import random
from collections.abc import Container

ADJECTIVES = (
    "agile amazing bold brave calm clever cool crisp dazzling eager elastic epic fervent fond "
    "gallant gentle happy hardy jolly keen kind lively loving lucid merry modest nifty nimble "
    "patient peaceful plucky proud quirky quick relaxed serene sharp sleepy snappy stoic sturdy "
    "sweet tender trusting upbeat vibrant vigilant wizardly witty youthful zealous zen"
).split()
SURNAMES = (
    "agnesi albattani allen archimedes babbage bardeen bartik bell blackwell bohr bose brahmagupta "
    "cannon carson cerf curie darwin dijkstra einstein euclid euler faraday fermat fermi feynman "
    "franklin galileo gauss goldberg goodall hamilton hawking heisenberg hodgkin hopper hypatia "
    "jackson johnson kepler knuth lamarr leakey liskov lovelace mayer mccarthy meitner mendel "
    "morse newton noether pasteur payne perlman pike poincare ritchie shannon stallman swartz "
    "tesla thompson torvalds turing wiles wilson wozniak wright yonath"
).split()


def random_name(rng: random.Random, taken: Container[str]) -> str:
    for attempt in range(100):
        name = f"{rng.choice(ADJECTIVES)}_{rng.choice(SURNAMES)}"
        if attempt >= 10:
            name += str(rng.randint(0, 99))
        if name not in taken:
            return name
    raise RuntimeError("could not find a free container name")
