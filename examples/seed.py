"""The user guide's examples (README: Pipelines), as tasks and pipelines."""

from __future__ import annotations

from datetime import timedelta

from flink_tasks import FlinkTasks, PipelineBuilder, TaskException, in_parallel

tasks = FlinkTasks()


@tasks.bind()
def multiply(x: float, y: float) -> float:
    return x * y


@tasks.bind()
def divide(x: float, y: float) -> float:
    return x / y


@tasks.bind()
def add(x: float, y: float) -> float:
    return x + y


@tasks.bind()
def subtract(x: float, y: float) -> float:
    return x - y


@tasks.bind()
def average(values: list[float]) -> float:
    return sum(values) / len(values)


@tasks.bind(with_state=True)
def multiply_with_state(state: object, x: float, y: float) -> tuple[int, float]:
    state = 10
    return state, x * y


@tasks.bind(with_state=True)
def add_state(state: int, x: float) -> tuple[int, float]:
    return state, state + x


@tasks.bind()
def handle_error(ex: TaskException) -> str:
    return f"handled {ex.exception_type}"


@tasks.bind()
def fail(message: str) -> None:
    raise ValueError(message)


@tasks.bind(with_state=True)
def cleanup(state: object, *args: object) -> tuple[object, None]:
    return state, None


@tasks.bind()
def multiply_and_subtract(mult_a: float, mult_b: float, sub_c: float) -> PipelineBuilder:
    return multiply.send(mult_a, mult_b).continue_with(subtract, sub_c)


@tasks.bind()
def add_positive(x: float, y: float) -> PipelineBuilder:
    return add.send(x, y).continue_with(make_positive)


@tasks.bind()
def make_positive(x: float) -> float | PipelineBuilder:
    if x > 0:
        return x
    return multiply.send(x, -1)


@tasks.bind()
def count_to_100(x: int) -> PipelineBuilder:
    return add.send(x, 1).continue_with(check_result)


@tasks.bind()
def check_result(x: int) -> int | PipelineBuilder:
    if x == 100:
        return x
    return count_to_100.send(x)


def continuation() -> PipelineBuilder:
    return multiply.send(3, 2).continue_with(divide, 2)


def fan_out() -> PipelineBuilder:
    return in_parallel([multiply.send(3, 2), multiply.send(4, 5)])


def fan_in() -> PipelineBuilder:
    return in_parallel([multiply.send(3, 2), multiply.send(4, 5)]).continue_with(average)


def nested() -> PipelineBuilder:
    return in_parallel(
        [
            multiply.send(3, 2).continue_with(divide, 2),
            in_parallel([multiply.send(4, 5), multiply.send(3, 4)]).continue_with(average),
        ]
    ).continue_with(average)


def limited(count: int = 50) -> PipelineBuilder:
    return in_parallel([multiply.send(i, 2) for i in range(count)], max_parallelism=10)


def staged(count: int = 10_000) -> PipelineBuilder:
    return in_parallel([multiply.send(i) for i in range(1, count + 1)], num_stages=10).with_initial(
        args=2
    )


def unordered() -> PipelineBuilder:
    # results in completion order; average does not mind the order
    return in_parallel([multiply.send(3, 2), multiply.send(4, 5)], ordered=False).continue_with(
        average
    )


def delayed() -> PipelineBuilder:
    # starts 1 s after it is reached (durably), fails with TaskExpiredError if not started in 1 min
    return multiply.send(3, 2).set(countdown=timedelta(seconds=1), expires=timedelta(minutes=1))


def shared_state() -> PipelineBuilder:
    return multiply_with_state.send(3, 2).continue_with(subtract, 1).continue_with(add_state)


def error_handling() -> PipelineBuilder:
    return fail.send("boom").exceptionally(handle_error).finally_do(cleanup)


def composition() -> PipelineBuilder:
    return multiply_and_subtract.send(3, 2, 1).continue_with(multiply, 10)


def conditional() -> PipelineBuilder:
    return add_positive.send(-3, 2)


def recursion() -> PipelineBuilder:
    return count_to_100.send(0)


# name -> (pipeline factory, the documented result)
EXAMPLES = {
    "continuation": (continuation, 3.0),
    "fan_out": (fan_out, [6, 20]),
    "fan_in": (fan_in, 13.0),
    "nested": (nested, 9.5),
    "max_parallelism": (limited, [2 * i for i in range(50)]),
    "num_stages_with_initial": (staged, [2 * i for i in range(1, 10_001)]),
    "unordered": (unordered, 13.0),
    "countdown_expires": (delayed, 6),
    "shared_state": (shared_state, 15),
    "exceptionally_finally": (error_handling, "handled builtins.ValueError"),
    "composition": (composition, 50),
    "conditional": (conditional, 1),
    "recursion_count_to_100": (recursion, 100),
}
