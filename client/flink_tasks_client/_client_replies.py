"""The client's side of the shared reply decoder (`flink_tasks.replies`)."""

from __future__ import annotations

from typing import Any

from flink_tasks import replies
from flink_tasks._proto import messages_pb2
from flink_tasks_client.settings import ClientSettings


class ReplyDecoding:
    """Turns `Reply` messages into results or exceptions, under the client's settings."""

    _settings: ClientSettings

    @property
    def allow_pickle(self) -> bool:
        """Whether pickled results are accepted (see `ClientSettings.allow_pickle`)."""
        return self._settings.allow_pickle

    def _pipeline_outcome(self, reply: messages_pb2.Reply) -> Any:
        return replies.pipeline_outcome(reply, allow_pickle=self.allow_pickle)

    def _action_outcome(self, action: int, reply: messages_pb2.Reply) -> Any:
        return replies.action_outcome(action, reply, allow_pickle=self.allow_pickle)
