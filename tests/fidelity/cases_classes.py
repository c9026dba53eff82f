"""Methods, classmethods, staticmethods, property helpers, super(), name mangling, dunder methods."""
import collections
import dataclasses

from poet_runtime import poet
from fidelity_kit import case

RUNS = collections.Counter()


class Account:
    fee = 2

    def __init__(self, owner: str, balance: int = 0):
        self.owner = owner
        self.balance = balance
        self.__pin = 1234

    @poet
    def deposit(self, amount: int) -> int:
        RUNS["deposit"] += 1
        self.balance += amount - self.fee
        return self.balance

    @poet
    def check_pin(self, pin: int) -> bool:
        RUNS["check_pin"] += 1
        return self.__pin == pin

    @poet
    def rename(self, owner: str) -> "Account":
        RUNS["rename"] += 1
        self.owner = owner
        return self

    @classmethod
    @poet
    def opened_by(cls, owner: str) -> "Account":
        RUNS["opened_by"] += 1
        return cls(owner, 10)

    @staticmethod
    @poet
    def interest(balance: int, rate: float) -> float:
        RUNS["interest"] += 1
        return round(balance * rate, 2)

    @poet
    def _area_of(self) -> int:
        RUNS["_area_of"] += 1
        return len(self.owner) * 10

    @property
    def score(self) -> int:
        return self._area_of()


class Savings(Account):
    fee = 0

    @poet
    def deposit(self, amount: int) -> int:
        RUNS["Savings.deposit"] += 1
        return super().deposit(amount) + 1

    @poet
    def describe(self) -> str:
        RUNS["Savings.describe"] += 1
        return f"{type(self).__name__}:{self.owner}:{super().__repr__().split(' ')[0]}"


class Counted:
    __slots__ = ("items",)

    def __init__(self, items):
        self.items = items

    @poet
    def __len__(self) -> int:
        RUNS["__len__"] += 1
        return len(self.items)

    @poet
    def __contains__(self, item) -> bool:
        RUNS["__contains__"] += 1
        return item in self.items


class Outer:
    class Inner:
        @poet
        def where(self) -> str:
            RUNS["Outer.Inner.where"] += 1
            return type(self).__qualname__


class Shape:
    @property
    @poet
    def sides(self) -> int:
        RUNS["sides"] += 1
        return self.count

    def __init__(self, count):
        self.count = count


@dataclasses.dataclass
class Box:
    width: int
    height: int

    @poet
    def area(self) -> int:
        RUNS["area"] += 1
        return self.width * self.height

    @poet
    def grow(self, by: int) -> "Box":
        RUNS["grow"] += 1
        self.width += by
        return dataclasses.replace(self, height=self.height + by)


class Mangled:
    def __init__(self):
        self.__hidden = "secret"
        self._Mangled__other = "other"

    @poet
    def reveal(self) -> tuple:
        RUNS["reveal"] += 1
        self.__hidden = self.__hidden.upper()
        return self.__hidden, self.__other


@case()
def method_mutates_self(o):
    account = Account("ann", 5)
    result = o.call(account.deposit, 10)
    return {"result": result, "balance": account.balance}


@case()
def name_mangled_private_attribute(o):
    account = Account("bob")
    return {"right": o.call(account.check_pin, 1234), "wrong": o.call(account.check_pin, 1)}


@case()
def method_returns_self(o):
    account = Account("cy")
    result = o.call(account.rename, "dee")
    return {"is_self": result is account, "owner": account.owner}


@case()
def classmethod_builds_cls(o):
    made = o.call(Account.opened_by, "eve")
    sub = o.call(Savings.opened_by, "fay")
    return {"type": type(made), "sub_type": type(sub), "balance": made.balance}


@case()
def staticmethod_on_class_and_instance(o):
    return {"class": o.call(Account.interest, 100, 0.05), "instance": o.call(Account("g").interest, 7, 0.5)}


@case()
def property_over_a_poet_helper(o):
    account = Account("hank")
    return {"score": o.call_as("cases_classes:Account._area_of", lambda: account.score)}


@case()
def zero_argument_super(o):
    savings = Savings("ivy", 0)
    result = o.call(savings.deposit, 5)
    return {"result": result, "balance": savings.balance}


@case()
def super_repr_in_subclass(o):
    return {"result": o.call(Savings("jo").describe)}


@case()
def dunder_len_through_builtin(o):
    box = Counted([1, 2, 3])
    return {"len": o.call_as("cases_classes:Counted.__len__", len, box),
            "contains": o.call_as("cases_classes:Counted.__contains__", lambda: 2 in box)}


@case()
def nested_class_method(o):
    return {"result": o.call(Outer.Inner().where)}


@case()
def property_of_poet_method(o):
    shape = Shape(4)
    return {"sides": o.call_as("cases_classes:Shape.sides", lambda: shape.sides)}


@case()
def dataclass_methods(o):
    box = Box(2, 3)
    area = o.call(box.area)
    grown = o.call(box.grow, 1)
    return {"area": area, "grown": grown, "box": box, "distinct": grown is not box}


@case()
def mangled_attributes_written_and_read(o):
    thing = Mangled()
    result = o.call(thing.reveal)
    return {"result": result, "state": sorted(vars(thing).items())}


@case()
def unbound_method_through_class(o):
    account = Account("kim", 1)
    return {"result": o.call(Account.deposit, account, 3), "balance": account.balance}
