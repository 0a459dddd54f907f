"""`stdlib-code-chars`: the zoo's training-split language-model task, disjoint from the held-out
docstring tasks."""

from __future__ import annotations

import ast

from weightcast.zoo.tasks import TASKS, get_task
from weightcast.zoo.tasks.text import SEQ_LEN, _without_docstrings, decode, stdlib_code, stdlib_docstrings


def test_docstrings_and_comments_are_removed_exactly():
    source = '"""module doc"""\nimport os  # a comment\n\n\nclass A:\n    """class doc"""\n\n    def f(self):\n        """only a docstring"""\n'
    assert ast.unparse(_without_docstrings(ast.parse(source))) == "import os\n\nclass A:\n\n    def f(self):\n        pass"


def test_code_task_is_train_split_and_shares_no_docstring():
    assert TASKS.metadata("stdlib-code-chars")["split"] == "train"
    task = get_task("stdlib-code-chars")
    assert task.split == "train" and task.x_train.shape == (5000, SEQ_LEN) and task.x_val.shape == (1000, SEQ_LEN)
    assert (task.y_train[:, :-1] == task.x_train[:, 1:]).all()  # targets: the inputs shifted by one
    code = stdlib_code(200_000)
    assert decode(task.x_train[0]) == code[:SEQ_LEN]
    long_docstrings = [d for d in stdlib_docstrings(200_000).split("\n\n") if len(d) > 80]
    assert long_docstrings and not any(d in code for d in long_docstrings)
