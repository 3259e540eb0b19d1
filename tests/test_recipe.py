"""The recipe inspection: learned state and data are found in a recipe pickle, never run."""

from __future__ import annotations

import builtins
import os
import pickle
import pickletools
import random
import sys
import time
import types
import uuid

import cloudpickle
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer, make_column_selector, make_column_transformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    RandomForestClassifier,
    StackingClassifier,
)
from sklearn.frozen import FrozenEstimator
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    OneHotEncoder,
    PolynomialFeatures,
    StandardScaler,
)
from sklearn.utils import all_estimators

from leakbench.grading.recipe import RECIPE_MAX_BYTES, RECIPE_MAX_VALUES, inspect_recipe

NUM = [f"num_{i}" for i in range(5)]
CAT = ["cat0", "cat1"]
LABELS = [i % 2 for i in range(200)]


def dumps(obj) -> bytes:
    """What the sandbox worker sends: the recipe pickled with the highest protocol."""
    return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def recipe(pipeline) -> bytes:
    return dumps(clone(pipeline))


def assert_by_value(data: bytes) -> None:
    """The pickle carries code (a function or class pickled by value), not a reference."""
    strings = {arg for op, arg, _ in pickletools.genops(data) if isinstance(arg, str)}
    assert "CodeType" in strings and "_make_function" in strings


@pytest.fixture
def agent():
    """Run agent source in a module that cloudpickle pickles by value, like the sandbox's
    ``__main__``; the module is unregistered afterwards."""
    made = []

    def make(source: str, **names) -> types.ModuleType:
        module = types.ModuleType(f"agent_{uuid.uuid4().hex}")
        module.__dict__.update(names)
        sys.modules[module.__name__] = module
        cloudpickle.register_pickle_by_value(module)
        made.append(module)
        exec(source, module.__dict__)
        return module

    yield make
    for module in made:
        cloudpickle.unregister_pickle_by_value(module)
        del sys.modules[module.__name__]


def main_module(source: str, **names) -> types.ModuleType:
    """Code defined in a ``__main__`` module, which cloudpickle always pickles by value."""
    module = types.ModuleType("__main__")
    module.__dict__.update(names)
    exec(source, module.__dict__)
    return module


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    y = (X[:, 0] + rng.normal(size=300) > 0).astype(int)
    lr = LogisticRegression().fit(X, y)
    hgb = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(X, y)
    return {"LogisticRegression": lr, "HistGradientBoostingClassifier": hgb}


def column_transformer(**ohe) -> ColumnTransformer:
    numeric = Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())])
    return ColumnTransformer(
        [("num", numeric, NUM), ("cat", OneHotEncoder(handle_unknown="ignore", **ohe), CAT)]
    )


# --- honest recipes pass ------------------------------------------------------------------------

HONEST = {
    "column transformer + logistic regression": lambda: Pipeline(
        [("ct", column_transformer()), ("lr", LogisticRegression(C=0.5, max_iter=500))]
    ),
    "explicit categories": lambda: Pipeline(
        [
            ("ct", column_transformer(categories=[[0, 1, 2, 3], [0, 1, 2]])),
            ("lr", LogisticRegression()),
        ]
    ),
    "numpy categories": lambda: OneHotEncoder(categories=[np.arange(4), np.array([0, 1, 2])]),
    "polynomial features": lambda: Pipeline(
        [("poly", PolynomialFeatures(2)), ("scale", StandardScaler()), ("lr", LogisticRegression())]
    ),
    "hist gradient boosting": lambda: HistGradientBoostingClassifier(
        categorical_features="from_dtype", random_state=0
    ),
    "random forest": lambda: RandomForestClassifier(random_state=0),
    "grid search": lambda: GridSearchCV(
        Pipeline([("ct", column_transformer()), ("lr", LogisticRegression())]),
        {"lr__C": [0.01, 0.1, 1.0, 10.0], "ct__num__impute__strategy": ["mean", "median"]},
        cv=3,
    ),
    "calibrated": lambda: CalibratedClassifierCV(
        HistGradientBoostingClassifier(random_state=0), cv=3, method="isotonic"
    ),
    "column selector, remainder": lambda: make_column_transformer(
        (OneHotEncoder(), make_column_selector(dtype_include="category")),
        remainder=StandardScaler(),
    ),
    "ufunc": lambda: FunctionTransformer(np.log1p, feature_names_out="one-to-one"),
    "stacking": lambda: StackingClassifier(
        [("lr", LogisticRegression()), ("mlp", MLPClassifier(hidden_layer_sizes=(64, 32)))]
    ),
    "pandas output": lambda: Pipeline(
        [("ct", column_transformer()), ("lr", LogisticRegression())]
    ).set_output(transform="pandas"),
}


@pytest.mark.parametrize("name", HONEST)
def test_honest_sklearn_recipes_pass(name):
    assert inspect_recipe(recipe(HONEST[name]())) == []


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_every_default_sklearn_estimator_passes():
    checked = 0
    for name, cls in all_estimators():
        try:
            estimator = cls()
        except TypeError:  # needs an estimator or another required argument
            continue
        assert inspect_recipe(recipe(estimator)) == [], name
        checked += 1
    assert checked > 150


HONEST_CODE = '''
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin

COLUMNS = [f"num_{i}" for i in range(5)] + ["cat0", "cat1"] + [f"extra_{i}" for i in range(13)]


def select(frame):
    """Keep the modelling columns, as floats."""
    return pd.DataFrame(frame)[COLUMNS].astype(float)


class Clipper(BaseEstimator, TransformerMixin):
    """Clip each column to quantiles learned in fit()."""

    def __init__(self, low=0.01, high=0.99):
        self.low = low
        self.high = high

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=float)
        self.lo_ = np.nanquantile(X, self.low, axis=0)
        self.hi_ = np.nanquantile(X, self.high, axis=0)
        return self

    def transform(self, X):
        if not hasattr(self, "lo_"):
            raise RuntimeError("Clipper is not fitted yet: call fit() first")
        return np.clip(np.asarray(X, dtype=float), self.lo_, self.hi_)


class Ridge(BaseEstimator, ClassifierMixin):
    """A small logistic model fitted by gradient descent."""

    def __init__(self, alpha=1.0, steps=200, rate=0.1):
        self.alpha = alpha
        self.steps = steps
        self.rate = rate

    def fit(self, X, y):
        X = np.asarray(X, dtype=float)
        self.classes_ = np.unique(y)
        self.coef_ = np.zeros(X.shape[1])
        self.intercept_ = 0.0
        for _ in range(self.steps):
            p = 1 / (1 + np.exp(-(X @ self.coef_ + self.intercept_)))
            self.coef_ -= self.rate * (X.T @ (p - y) / len(y) + self.alpha * self.coef_ / len(y))
            self.intercept_ -= self.rate * float(np.mean(p - y))
        return self

    def predict_proba(self, X):
        z = np.asarray(X, dtype=float) @ self.coef_ + self.intercept_
        p = 1 / (1 + np.exp(-np.clip(z, -30, 30)))
        return np.column_stack([1 - p, p])

    @property
    def n_coef(self):
        """How many coefficients the model has."""
        return len(self.coef_)

    @staticmethod
    def _check(x):
        return [v for v in x if v is not None]
'''


def test_honest_by_value_classes_and_functions_pass(agent):
    mod = agent(HONEST_CODE)
    pipeline = Pipeline(
        [
            ("select", FunctionTransformer(mod.select)),
            ("log", FunctionTransformer(lambda X: np.log1p(np.abs(X)), validate=False)),
            ("clip", mod.Clipper(0.05, 0.95)),
            ("scale", StandardScaler()),
            ("clf", mod.Ridge(alpha=0.5)),
        ]
    )
    data = recipe(pipeline)
    assert_by_value(data)
    assert inspect_recipe(data) == []


def test_honest_main_module_lambda_with_column_list_passes():
    mod = main_module(
        "import numpy as np\nimport pandas as pd\n"
        "COLS = " + repr([f"feature_{i}" for i in range(20)]) + "\n"
        "pick = lambda frame: pd.DataFrame(frame)[COLS].to_numpy(dtype=np.float64)\n"
    )
    data = recipe(Pipeline([("pick", FunctionTransformer(mod.pick)), ("lr", LogisticRegression())]))
    assert_by_value(data)
    assert inspect_recipe(data) == []


# --- fitted models are found --------------------------------------------------------------------

CLOSURE_CODE = """
import numpy as np

def whole(model):
    def score(X):
        return model.predict_proba(X)[:, 1:]
    return score

def feature(model):
    def score(X):
        return np.column_stack([X, model.predict_proba(X)[:, 1]])
    return score
"""


@pytest.mark.parametrize("model", ["LogisticRegression", "HistGradientBoostingClassifier"])
@pytest.mark.parametrize("use", ["whole", "feature"])
def test_fitted_model_in_a_closure_is_found(agent, fitted, model, use):
    mod = agent(CLOSURE_CODE)
    func = getattr(mod, use)(fitted[model])
    data = recipe(Pipeline([("leak", FunctionTransformer(func)), ("lr", LogisticRegression())]))
    assert_by_value(data)
    reasons = inspect_recipe(data)
    assert len(reasons) == 1
    assert reasons[0].startswith(
        f"a fitted {model} is carried in the recipe "
        "(closure of function 'score' in FunctionTransformer.func)"
    )


def test_fitted_model_in_a_main_module_closure_is_found(fitted):
    mod = main_module(CLOSURE_CODE)
    data = recipe(
        Pipeline([("leak", FunctionTransformer(mod.feature(fitted["LogisticRegression"])))])
    )
    assert inspect_recipe(data)[0].startswith("a fitted LogisticRegression")


def test_fitted_model_as_a_parameter_is_found(agent, fitted):
    lr = fitted["LogisticRegression"]
    mod = agent(
        "from sklearn.base import BaseEstimator, ClassifierMixin\n"
        "class MyWrapper(BaseEstimator, ClassifierMixin):\n"
        "    def __init__(self, model=None, models=None):\n"
        "        self.model = model\n"
        "        self.models = models\n"
        "    def predict_proba(self, X):\n"
        "        return (self.model or self.models.m).predict_proba(X)\n"
    )
    # clone() deep-copies a parameter that is not an estimator, list, tuple, set or dict
    data = recipe(mod.MyWrapper(models=types.SimpleNamespace(m=lr)))
    assert inspect_recipe(data)[0].startswith(
        "a fitted LogisticRegression is carried in the recipe (SimpleNamespace.m)"
    )
    # a worker that skips clone(): fitted parameters of custom and meta-estimators
    for pipeline, where in [
        (mod.MyWrapper(model=lr), "MyWrapper.model"),
        (CalibratedClassifierCV(lr, cv=3), "CalibratedClassifierCV.estimator"),
        (Pipeline([("clf", FrozenEstimator(lr))]), "FrozenEstimator.estimator"),
    ]:
        assert inspect_recipe(dumps(pipeline))[0].startswith(
            f"a fitted LogisticRegression is carried in the recipe ({where})"
        )
    # FrozenEstimator survives clone() itself
    assert inspect_recipe(recipe(Pipeline([("clf", FrozenEstimator(lr))])))


def test_fitted_model_as_class_attribute_or_global_is_found(agent, fitted):
    hgb = fitted["HistGradientBoostingClassifier"]
    mod = agent(
        "from sklearn.base import BaseEstimator, ClassifierMixin\n"
        "class Leaky(BaseEstimator, ClassifierMixin):\n"
        "    def fit(self, X, y):\n"
        "        return self\n"
        "    def predict_proba(self, X):\n"
        "        return type(self).model.predict_proba(X)\n"
        "def score(X):\n"
        "    return MODEL.predict_proba(X)\n"
    )
    mod.Leaky.model = hgb
    mod.MODEL = hgb
    reasons = inspect_recipe(recipe(mod.Leaky()))
    assert reasons[0].startswith(
        "a fitted HistGradientBoostingClassifier is carried in the recipe "
        "(class attribute 'model' of class Leaky)"
    )
    reasons = inspect_recipe(recipe(FunctionTransformer(mod.score)))
    assert reasons[0].startswith(
        "a fitted HistGradientBoostingClassifier is carried in the recipe "
        "(global 'MODEL' of function 'score' in FunctionTransformer.func)"
    )


# --- data is found ------------------------------------------------------------------------------

TABLES = {
    "list": list(range(300)),
    "tuple": tuple(LABELS),
    "dict": {i: label for i, label in enumerate(LABELS)},
    "ndarray": np.array(LABELS, dtype=np.int8),
    "float array": np.linspace(0, 1, 300),
    "bits string": "".join(map(str, LABELS)),
    "spaced string": " ".join(map(str, LABELS)),
    "bytes": bytes(LABELS),
}


@pytest.mark.parametrize("kind", TABLES)
def test_table_as_parameter_is_found(kind):
    data = recipe(FunctionTransformer(np.add, kw_args={"x2": TABLES[kind]}))
    reasons = inspect_recipe(data)
    assert len(reasons) == 1
    assert "data values in a dict (FunctionTransformer.kw_args)" in reasons[0]
    assert reasons[0].endswith("a pipeline must learn from fit(), not carry data")


def test_other_carriers_are_found(fitted):
    cases = {
        "a pickled model": pickle.dumps(fitted["LogisticRegression"]),
        "an object array": np.array(LABELS, dtype=object),
        "a numpy RandomState (its state can hold any data)": np.random.RandomState(0),
    }
    for name, value in cases.items():
        reasons = inspect_recipe(recipe(FunctionTransformer(np.add, kw_args={"x2": value})))
        assert len(reasons) == 1 and "data values in a" in reasons[0], name


def test_data_in_a_docstring_is_found():
    mod = main_module(f'def f(X):\n    """{"01" * 100}"""\n    return X\n')
    assert inspect_recipe(recipe(FunctionTransformer(mod.f))) == [
        "the recipe carries 200 data values in a string (function 'f' in "
        "FunctionTransformer.func) (at most 128 allowed); a pipeline must learn from fit(), "
        "not carry data"
    ]


def test_enum_members_are_counted():
    members = "".join(f"    r{i} = {2 * i + label}\n" for i, label in enumerate(LABELS))
    mod = main_module(
        f"import enum\nclass Lab(enum.Enum):\n{members}f = lambda X: [m.value for m in Lab]\n"
    )
    reasons = inspect_recipe(recipe(FunctionTransformer(mod.f)))
    assert len(reasons) == 1 and "400 data values in a dict (members of enum Lab)" in reasons[0]


def test_big_integer_is_found():
    bits = int("".join(map(str, LABELS)), 2) | 1 << 199
    reasons = inspect_recipe(recipe(FunctionTransformer(np.add, kw_args={"x2": bits})))
    assert reasons == [
        "the recipe carries a 200-bit integer (FunctionTransformer.kw_args); "
        "a pipeline must learn from fit(), not carry data"
    ]


@pytest.mark.parametrize("frame", [pd.Series([0.5]), pd.DataFrame({"a": [1, 2, 3]})])
def test_any_data_frame_is_found(frame):
    reasons = inspect_recipe(recipe(FunctionTransformer(np.add, kw_args={"x2": frame})))
    assert len(reasons) == 1
    assert reasons[0].startswith(
        f"the recipe carries a pandas {type(frame).__name__} (FunctionTransformer.kw_args)"
    )
    # the sandbox's train_df referenced by a function the agent defined
    mod = main_module("f = lambda X: X.join(train_df)\n", train_df=pd.DataFrame(frame))
    assert inspect_recipe(recipe(FunctionTransformer(mod.f))) == [
        "the recipe carries a pandas DataFrame (global 'train_df' of function '<lambda>' in "
        "FunctionTransformer.func); a recipe must not carry data frames: a pipeline gets its "
        "data in fit() and predict()"
    ]


TABLE_CODE = """
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

def make(table):
    def lookup(X):
        return np.asarray(table)[: len(X)]
    return lookup

def default(X, table=TABLE):
    return table

def global_(X):
    return TABLE

class MyModel(BaseEstimator, ClassifierMixin):
    table = TABLE

    def fit(self, X, y):
        return self

    def predict_proba(self, X):
        labels = LITERAL
        return np.asarray(labels)
"""


@pytest.mark.parametrize("kind", ["tuple", "list", "ndarray", "bits string", "bytes"])
def test_table_in_by_value_code_is_found(agent, kind):
    table = TABLES[kind]
    source = TABLE_CODE.replace("LITERAL", repr(tuple(LABELS)))
    mod = agent(source, TABLE=table)
    wanted = {
        "closure of function 'lookup' in FunctionTransformer.func": mod.make(table),
        "default argument of function 'default' in FunctionTransformer.func": mod.default,
        "global 'TABLE' of function 'global_' in FunctionTransformer.func": mod.global_,
    }
    for where, func in wanted.items():
        data = recipe(FunctionTransformer(func))
        assert_by_value(data)
        reasons = inspect_recipe(data)
        assert len(reasons) == 1 and where in reasons[0], (where, reasons)
    reasons = inspect_recipe(recipe(mod.MyModel()))
    assert len(reasons) == 1 and "(class attribute 'table' of class MyModel)" in reasons[0]


def test_code_constant_table_message():
    mod = main_module(
        "from sklearn.base import BaseEstimator, ClassifierMixin\n"
        "class MyModel(BaseEstimator, ClassifierMixin):\n"
        "    def predict_proba(self, X):\n"
        f"        return {tuple(LABELS)!r}\n"
    )
    # (the one value elsewhere is in sklearn's metadata-routing class attribute)
    assert inspect_recipe(recipe(mod.MyModel())) == [
        "the recipe carries 200 data values in a tuple (code constant of 'predict_proba' of "
        "class MyModel) and 1 elsewhere (at most 128 allowed); a pipeline must learn from fit(), "
        "not carry data"
    ]


def test_data_spread_over_many_places_is_summed(agent):
    mod = agent("class Spread:\n    pass\n")
    for i, label in enumerate(LABELS[:100]):
        setattr(mod.Spread, f"a{i}", label)
    kw_args = {"x2": mod.Spread, "x3": list(range(100))}
    assert inspect_recipe(recipe(FunctionTransformer(np.add, kw_args=kw_args))) == [
        "the recipe carries 202 data values, the most 102 in a dict (FunctionTransformer.kw_args), "
        "100 in numbers (class attributes of class Spread) (at most 128 allowed); a pipeline "
        "must learn from fit(), not carry data"
    ]


def test_max_values_is_the_limit():
    data = recipe(FunctionTransformer(np.add, kw_args={"x2": list(range(50))}))
    assert RECIPE_MAX_VALUES > 51
    assert inspect_recipe(data) == []
    assert inspect_recipe(data, max_values=51) == []
    assert "51 data values" in inspect_recipe(data, max_values=50)[0]


# --- hostile and malformed pickles --------------------------------------------------------------


class _Evil:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def test_hostile_calls_have_no_effect_and_are_flagged(tmp_path):
    target = tmp_path / "pwned"
    write = f"open({str(target)!r}, 'w').write('x')"
    hostile = {
        "os.system": pickle.dumps(_Evil(os.system, f"touch {target}")),
        "exec": pickle.dumps(_Evil(builtins.exec, write)),
        "eval": pickle.dumps(_Evil(builtins.eval, write)),
        "protocol 0": f"cos\nsystem\n(S'touch {target}'\ntR.".encode(),
        "inside a pipeline": dumps(
            Pipeline([("f", FunctionTransformer(np.add, kw_args={"x": _Evil(eval, write)}))])
        ),
        "getattr": b"cbuiltins\ngetattr\n(ccloudpickle.cloudpickle\nsubimport\n(Vos\ntR"
        + f"Vsystem\ntR(Vtouch {target}\ntR.".encode(),
    }
    for name, data in hostile.items():
        reasons = inspect_recipe(data)
        assert not target.exists(), name
        assert any("it can run code" in r or "it builds while loading" in r for r in reasons)
    assert inspect_recipe(hostile["os.system"]) == [
        "the recipe uses posix.system (called while loading); it can run code or read files, "
        "and a recipe may only build objects"
    ]
    assert inspect_recipe(hostile["getattr"]) == [
        "the recipe calls an object it builds while loading (the recipe itself); "
        "a recipe may only build objects",
        "the recipe uses os.system (called while loading); it can run code or read files, "
        "and a recipe may only build objects",
    ]
    assert (
        "eval (called while loading FunctionTransformer.kw_args)"
        in (inspect_recipe(hostile["inside a pipeline"])[0])
    )


def test_changing_an_imported_object_is_flagged():
    # BUILD on a global or module would set attributes on the real class or module
    data = b"\x80\x04csklearn.base\nBaseEstimator\n}(X\x01\x00\x00\x00xK\x01ub."
    assert inspect_recipe(data) == [
        "the recipe modifies sklearn.base.BaseEstimator (while loading); "
        "a recipe may only build objects"
    ]
    data = b"ccloudpickle.cloudpickle\nsubimport\n(Vsklearn\ntR}(Vx\nK\x01ub."
    assert inspect_recipe(data) == [
        "the recipe modifies sklearn (while loading); a recipe may only build objects"
    ]


def test_unreachable_calls_are_still_inspected(fitted):
    # a call whose result is dropped (POP) still runs when the recipe loads
    call = pickle.dumps(_Evil(print, fitted["LogisticRegression"]), protocol=2)
    data = call[:-1] + b"0" + pickle.dumps(LogisticRegression(), protocol=2)
    assert pickle.loads(data).__class__ is LogisticRegression
    assert inspect_recipe(data) == [
        "a fitted LogisticRegression is carried in the recipe (a call made while the recipe "
        "loads): it has learned attributes (classes_, coef_, intercept_, n_features_in_), so it "
        "was fitted outside the pipeline's fit()"
    ]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        recipe(LogisticRegression())[:-10],
        b"\x80\x05N",  # no STOP
        b"\x80\x05\x96\xff\xff\xff\xff\xff\x00\x00\x00.",  # BYTEARRAY8 of a terabyte
        b"\x80\x02X\x01\x00\x00\x00aQ.",  # persistent id
        b"\x80\x02\x82\x01.",  # extension code
        b"\x80\x05\x97.",  # out-of-band buffer
        b"\x80\x02h\x05.",  # memo miss
        b"L" + b"9" * 5000 + b"L\n.",  # a very long text integer
        "not bytes",
    ],
)
def test_malformed_input_gives_a_reason(data):
    reasons = inspect_recipe(data)
    assert len(reasons) == 1 and reasons[0].startswith("the recipe cannot be read: ")


def test_oversized_input_is_refused():
    data = pickle.dumps(b"x" * RECIPE_MAX_BYTES)
    assert inspect_recipe(data) == [
        f"the recipe cannot be read: it is {len(data)} bytes, over {RECIPE_MAX_BYTES}"
    ]


def _hostile_inputs() -> dict[str, bytes]:
    """Pickles of up to 1 MiB built to exhaust time, memory or the C stack."""
    size = RECIPE_MAX_BYTES - 64
    return {
        # shared tuples: hashing the top one as a dict key would take 2**4000 steps
        "dag": b"\x80\x04})" + b"2\x86" * 4000 + b"Ns.",
        # one 999-tuple as the key of 24,000 SETITEMs: each would walk and hash it again
        "shared key": b"\x80\x04}(" + b"N" * 999 + b"t\x94" + b"0" + b"h\x00Ns" * 24000 + b".",
        "deep": b"\x80\x04" + b"]" * (size // 2) + b"a" * (size // 2 - 1) + b".",
        "nested": b"\x80\x04" + b"(" * (size // 3) + b"N" + b"t" * (size // 3) + b".",
        "wide": b"\x80\x04](" + b"K\x01" * (size // 2 - 4) + b"e.",
        "calls": b"\x80\x04cbuiltins\nlen\n" + b"(tR" * (size // 3) + b".",
        "junk": random.Random(0).randbytes(size),
    }


@pytest.mark.parametrize("name", ["dag", "shared key", "deep", "nested", "wide", "calls", "junk"])
def test_hostile_input_is_handled_quickly(name):
    data = _hostile_inputs()[name]
    # CPU time, what such an input is built to burn: unlike wall time, not stretched by whatever
    # else runs on the machine. (About 0.3 s for the slowest of these.)
    start = time.process_time()
    reasons = inspect_recipe(data)
    assert time.process_time() - start < 10
    assert reasons and all(isinstance(r, str) for r in reasons)


def test_mutated_recipes_never_raise(agent):
    mod = agent(HONEST_CODE)
    data = bytearray(recipe(Pipeline([("clip", mod.Clipper()), ("clf", mod.Ridge())])))
    rng = random.Random(1)
    for _ in range(300):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.getrandbits(8)
        reasons = inspect_recipe(bytes(mutated))
        assert isinstance(reasons, list) and all(isinstance(r, str) for r in reasons)


def test_nothing_is_imported():
    name = f"never_imported_{uuid.uuid4().hex}"
    data = b"\x80\x04c" + name.encode() + b"\nthing\n)R."
    assert inspect_recipe(data) == []
    assert name not in sys.modules
