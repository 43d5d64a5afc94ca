"""The tutorial's four endpoints, the JSON API (``POST /notifications``), task lookup, health
and readiness. Every POST honours ``Idempotency-Key`` (``service.idempotency``: a middleware;
the header is declared here for the OpenAPI schema)."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from observability import TaskRoute, Tasks, Telemetry
from service.fields import DeliverableText, E164Phone, Email, Phone, Subject
from service.idempotency import MAX_KEY_LENGTH
from service.notifications import SAFE_ENTRY, NotificationService
from service.responses import (
    ACCEPTED_RESPONSES,
    LIMIT_RESPONSES,
    LOOKUP_RESPONSES,
    NOT_READY_RESPONSES,
    TASK_RESPONSES,
    NotificationAccepted,
)
from service.settings import Settings


async def idempotency_key(
    key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=MAX_KEY_LENGTH,
            pattern=r"^[ -~]+$",
            description="Makes a retry safe: the same key and request within "
            "NOTIFY_IDEMPOTENCY_TTL_SECONDS get the first answer again (header "
            "`Idempotent-Replayed: true`) and run nothing; the same key with another request is "
            "422, a repeat while the first is in progress 409. 1 to 255 printable ASCII "
            "characters, e.g. a UUID.",
        ),
    ] = None,
) -> None:
    """Declares the header (the middleware has honoured it already)."""


IDEMPOTENT = [Depends(idempotency_key)]


def build_router(
    settings: Settings, notifications: NotificationService, telemetry: Telemetry
) -> APIRouter:
    """The notification endpoints, adding tasks of ``notifications``; text limits come from
    ``settings``; task lookup and readiness from ``telemetry``."""
    router = APIRouter(route_class=TaskRoute, responses=LIMIT_RESPONSES)
    _add_notification_routes(router, settings, notifications)
    _add_json_api(router, settings, notifications)
    _add_status_routes(router, settings, telemetry)
    return router


def _add_notification_routes(
    router: APIRouter, settings: Settings, notifications: NotificationService
) -> None:
    """The tutorial's four endpoints."""
    Text = Annotated[str, Query(min_length=1, max_length=settings.max_text_length)]
    OptionalText = Annotated[str | None, Query(min_length=1, max_length=settings.max_text_length)]
    Recipient = Annotated[Email, Path(description="recipient e-mail address")]

    @router.post("/send-notification/{email}", responses=TASK_RESPONSES, dependencies=IDEMPOTENT)
    async def send_notification(email: Recipient, tasks: Tasks) -> dict[str, Any]:
        task_id = tasks.add_task(notifications.write_log, f"message to {email}\n", to=email)
        return {"message": "Notification sent in background", "task_ids": [task_id]}

    async def get_query(tasks: Tasks, q: OptionalText = None) -> str | None:
        if q:
            tasks.add_task(notifications.write_log, f"Query: {q}\n")
        return q

    @router.post(
        "/advanced-notification/{email}", responses=TASK_RESPONSES, dependencies=IDEMPOTENT
    )
    async def advanced_notification(
        email: Recipient,
        tasks: Tasks,
        query: Annotated[str | None, Depends(get_query)],
    ) -> dict[str, Any]:
        tasks.add_task(notifications.write_log, f"Email: {email}\n", to=email)
        return {"status": "multi-task executed", "task_ids": tasks.task_ids}

    @router.post("/send-sms", responses=TASK_RESPONSES, dependencies=IDEMPOTENT)
    async def send_sms(phone: Annotated[Phone, Query()], msg: Text, tasks: Tasks) -> dict[str, Any]:
        task_id = tasks.add_task(notifications.sms_task, phone, msg)
        return {"result": "短信任务已排队", "task_ids": [task_id]}

    @router.post("/safe-notify", responses=TASK_RESPONSES, dependencies=IDEMPOTENT)
    async def safe_notify(tasks: Tasks) -> dict[str, Any]:
        task_id = tasks.add_task(notifications.safe_write_log, SAFE_ENTRY)
        return {"status": "error-handled", "task_ids": [task_id]}


def _add_json_api(
    router: APIRouter, settings: Settings, notifications: NotificationService
) -> None:
    """``POST /notifications``: one e-mail or SMS, as JSON; 202 with the task at ``Location``."""
    Text = Annotated[
        DeliverableText, StringConstraints(min_length=1, max_length=settings.max_text_length)
    ]

    class EmailNotification(BaseModel):
        """An e-mail: with the SMTP channel ``text`` is its body, ``subject`` its subject."""

        model_config = ConfigDict(extra="forbid")
        channel: Literal["email"]
        to: Email
        text: Text
        subject: Subject | None = None

    class SmsNotification(BaseModel):
        """An SMS to an E.164 number."""

        model_config = ConfigDict(extra="forbid")
        channel: Literal["sms"]
        to: E164Phone
        text: Text

    Notification = Annotated[EmailNotification | SmsNotification, Field(discriminator="channel")]

    @router.post(
        "/notifications",
        status_code=202,
        responses=ACCEPTED_RESPONSES,
        dependencies=IDEMPOTENT,
    )
    async def create_notification(
        notification: Notification, tasks: Tasks, response: Response
    ) -> NotificationAccepted:
        if isinstance(notification, EmailNotification):
            to = notification.to
            task_id = tasks.add_task(
                notifications.write_log,
                f"message to {to}\n",
                to=to,
                subject=notification.subject,
                body=notification.text,
            )
        else:
            task_id = tasks.add_task(notifications.sms_task, notification.to, notification.text)
        response.headers["Location"] = f"/tasks/{task_id}"
        return NotificationAccepted(id=task_id, task_ids=[task_id])


def _add_status_routes(router: APIRouter, settings: Settings, telemetry: Telemetry) -> None:
    """Task lookup, liveness and readiness."""

    @router.get("/tasks/{task_id}", responses=LOOKUP_RESPONSES)
    async def get_task(task_id: Annotated[str, Path(max_length=64)]) -> Any:
        status = await telemetry.task_status(task_id)
        if status is None:
            return JSONResponse(
                {
                    "detail": f"task {task_id!r} is not known: never enqueued here, or older than "
                    f"the {settings.task_history_size} most recent tasks this process remembers"
                },
                status_code=404,
            )
        return status

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", responses=NOT_READY_RESPONSES)
    async def readyz() -> JSONResponse:
        if telemetry.ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready"}, status_code=503)
