"""The Python side of the offline suite (scripts/test's pytest stage). A package, like each of its
directories, so tests import the shared helpers by path (`from tests.nixos.helpers import ...`) and
test files in different directories may share a name."""
