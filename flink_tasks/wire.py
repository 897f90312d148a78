"""Names on the wire: StateFun function types and message typenames."""

PIPELINE_FUNCTION = "flink_tasks/pipeline"
PIPELINE_REQUEST = "flink_tasks.v1/PipelineRequest"
ACTION_REQUEST = "flink_tasks.v1/ActionRequest"
TASK_REQUEST = "flink_tasks.v1/TaskRequest"
TASK_RESULT = "flink_tasks.v1/TaskResult"
PIPELINE_MESSAGE = "flink_tasks.v1/PipelineMessage"

DEFAULT_REQUEST_TOPIC = "flink-tasks.requests"
DEFAULT_ACTION_TOPIC = "flink-tasks.actions"
DEFAULT_REPLY_TOPIC = "flink-tasks.replies"
DEFAULT_EVENTS_TOPIC = "flink-tasks.events"
