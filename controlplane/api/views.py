"""JSON API views: validate with a serializer, call one service or selector, serialise.

Visibility: every object belongs to a team and is found only through the caller's
teams, so another team's run or dataset is a 404 everywhere. Roles (viewer < launcher <
admin) gate writes with a 403. The ingestion endpoint alone takes a run token instead
of a user.
"""

from __future__ import annotations

from django.db import DataError, IntegrityError, InterfaceError, InternalError, OperationalError
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import exceptions, generics, serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.accounts.models import Role
from controlplane.accounts.selectors import teams_for_user, user_can
from controlplane.accounts.services import SignInThrottled, TeamSettingInvalid, team_set_telemetry_retention
from controlplane.api import serializers as s
from controlplane.api.authentication import RunTokenAuthentication, TokenAuthentication  # expiring user tokens
from controlplane.api.pagination import DecisionPagination, PromptStatePagination, RunPagination
from controlplane.api.parsers import BoundedFormParser, BoundedJSONParser, BoundedMultiPartParser, RecordJSONParser
from controlplane.api.permissions import RunTokenScoped, require_role, run_or_404, team_or_404
from controlplane.api.services import api_token_expires_at, api_token_issue
from controlplane.budgets.selectors import budget_overview
from controlplane.budgets.services import BudgetExceeded
from controlplane.datasets.selectors import datasets_for_user
from controlplane.datasets.services import DatasetImportError, dataset_import
from controlplane.runs import selectors as run_selectors
from controlplane.runs.services import (
    IdempotencyKeyReused,
    RunStateError,
    run_cancel,
    run_create,
    run_resume,
    run_tags_set,
)
from controlplane.telemetry import services as telemetry
from workers.engines.config import ConfigError, RunConfig
from workers.record import RecordError, read_attempt


class BadRequest(exceptions.APIException):
    """400 whose body is exactly ``{"errors": errors}`` (no string coercion of row numbers)."""

    status_code = status.HTTP_400_BAD_REQUEST

    def __init__(self, errors) -> None:
        super().__init__()
        self.detail = {"errors": errors}


def validated(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    if not serializer.is_valid():
        raise BadRequest(serializer.errors)
    return serializer.validated_data


class MemberView(APIView):
    """A user's request: API token first (so a missing one answers 401 with
    ``WWW-Authenticate: Token``), then the browser session."""

    authentication_classes = (TokenAuthentication, SessionAuthentication)
    permission_classes = (IsAuthenticated,)


# -- auth ----------------------------------------------------------------------------------------


@extend_schema(tags=["auth"], responses={
    200: inline_serializer("Token", {"token": serializers.CharField(), "expires": serializers.DateTimeField()}),
    400: s.DetailSerializer, 429: s.DetailSerializer})
class TokenView(ObtainAuthToken):
    """POST username and password; answers the API token for ``Authorization: Token <key>`` and
    when it expires (EDGEPLANE_API_TOKEN_DAYS). Sign-ins are throttled per address and username,
    and a username is locked out after repeated failures: 429 with Retry-After."""

    parser_classes = (BoundedJSONParser, BoundedFormParser)

    def post(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        try:
            serializer.is_valid(raise_exception=True)
        except SignInThrottled as exc:
            throttled = exceptions.Throttled(wait=exc.retry_after)
            throttled.detail = exc.message  # the reason and the wait, without DRF's generic sentence
            raise throttled from exc
        token = api_token_issue(user=serializer.validated_data["user"])
        return Response({"token": token.key, "expires": api_token_expires_at(token).isoformat()})


# -- datasets ------------------------------------------------------------------------------------------


class DatasetListView(MemberView, generics.GenericAPIView):
    parser_classes = (BoundedMultiPartParser,)  # a file needs multipart: anything else is a 415
    serializer_class = s.DatasetSerializer

    def initialize_request(self, request, *args, **kwargs):
        # Checked by the upload handler before a byte of the body is read, however the body
        # comes to be read (the session's CSRF check reads the form during authentication).
        request.upload_gate = upload_gate
        return super().initialize_request(request, *args, **kwargs)

    def get_queryset(self):
        # The browsable API's filter form asks every list view for its queryset.
        return datasets_for_user(self.request.user)

    @extend_schema(tags=["datasets"], responses=s.DatasetSerializer(many=True))
    def get(self, request):
        return Response(s.DatasetSerializer(datasets_for_user(request.user), many=True).data)

    @extend_schema(tags=["datasets"], request={"multipart/form-data": s.DatasetUploadSerializer},
                   responses={201: s.DatasetSerializer, 400: s.RowErrorsSerializer, 403: s.DetailSerializer,
                              404: s.DetailSerializer})
    def post(self, request):
        upload = s.DatasetUploadSerializer(data=request.data)
        if not upload.is_valid():
            raise BadRequest(s.row_errors(upload.errors))
        data = upload.validated_data
        if request.query_params.get("team") not in (None, data["team"]):
            raise BadRequest([{"row": 0, "field": "team", "message": "the form's team differs from ?team="}])
        team = team_or_404(request.user, data["team"])
        require_role(request.user, team, Role.LAUNCHER)
        try:
            dataset = dataset_import(team=team, name=data["name"], filename=data["file"].name,
                                     data=data["file"].read(), user=request.user)
        except DatasetImportError as exc:
            raise BadRequest(exc.errors) from exc
        return Response(s.DatasetSerializer(dataset).data, status=status.HTTP_201_CREATED)


def upload_gate(request) -> None:
    """Before an upload is read: the launcher role, in the team named by ``?team=`` if the
    client names it there, else in at least one of the user's teams (the form's team is
    checked again once read). A viewer gets 403 without sending the file."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        raise exceptions.NotAuthenticated()
    slug = request.GET.get("team")
    if slug:
        require_role(user, team_or_404(user, slug), Role.LAUNCHER)
    elif not any(user_can(user, team, Role.LAUNCHER) for team in teams_for_user(user)):
        raise exceptions.PermissionDenied("uploading a dataset needs the launcher role or higher in a team; "
                                          "you are a viewer in all of yours")


class DatasetDetailView(MemberView):
    @extend_schema(tags=["datasets"], responses={200: s.DatasetSerializer, 404: s.DetailSerializer})
    def get(self, request, dataset_id: int):
        dataset = datasets_for_user(request.user).filter(pk=dataset_id).first()
        if dataset is None:
            raise exceptions.NotFound(f"no dataset {dataset_id} in your teams")
        return Response(s.DatasetSerializer(dataset).data)


# -- runs --------------------------------------------------------------------------------------------------


class RunListView(MemberView, generics.GenericAPIView):
    parser_classes = (BoundedJSONParser,)
    pagination_class = RunPagination
    serializer_class = s.RunSerializer

    def get_queryset(self):
        return run_selectors.runs_for_user(self.request.user)

    @extend_schema(tags=["runs"], parameters=[s.RunQuerySerializer], responses=s.RunSerializer(many=True))
    def get(self, request):
        filters = validated(s.RunQuerySerializer, request.query_params)
        runs = run_selectors.runs_for_user(request.user, **filters)
        page = self.paginate_queryset(runs)
        return self.get_paginated_response(s.RunSerializer(page, many=True).data)

    @extend_schema(tags=["runs"], request=s.RunCreateSerializer,
                   parameters=[OpenApiParameter(
                       "Idempotency-Key", str, OpenApiParameter.HEADER, required=False,
                       description="a key of yours (e.g. a UUID), unique per launch: a retried request with the same "
                                   "key and body answers the run the first one stored, never a second run")],
                   responses={201: s.RunDetailSchema, 400: s.ConfigErrorsSerializer, 403: s.DetailSerializer,
                              404: s.DetailSerializer, 409: s.BudgetRefusalSerializer,
                              422: OpenApiResponse(s.DetailSerializer, description="Idempotency-Key already used "
                                                                                   "for a different request")})
    def post(self, request):
        """Store the run (queued) and send its launch after the commit. A broker that cannot be
        reached still answers 201: the run is stored and queued, its ``reason`` says so, and
        beat re-sends the launch until a worker claims it."""
        data = validated(s.RunCreateSerializer, request.data)
        team = team_or_404(request.user, data["team"])
        require_role(request.user, team, Role.LAUNCHER)
        dataset = datasets_for_user(request.user).filter(pk=data["dataset"], team=team).first()
        if dataset is None:  # said with every problem of the config, not before them
            errors = {"dataset": [f"no dataset {data['dataset']} in team {team.slug}"]}
            for problem in RunConfig.problems(data["config"]):
                errors.setdefault(problem.field, []).append(problem.message)
            raise BadRequest(errors)
        try:
            run = run_create(team=team, dataset=dataset, name=data["name"], config=data["config"],
                             user=request.user, baseline=data["baseline"], tags=data["tags"],
                             idempotency_key=request.headers.get("Idempotency-Key", ""))
        except ConfigError as exc:
            raise BadRequest(exc.as_dict()) from exc
        except IdempotencyKeyReused as exc:
            return Response({"detail": str(exc), "run": exc.run.pk}, status=status.HTTP_422_UNPROCESSABLE_ENTITY)
        except BudgetExceeded as exc:
            return Response({"detail": str(exc), "forecast_device_hours": exc.forecast_device_hours,
                             "remaining_device_hours": exc.remaining_device_hours},
                            status=status.HTTP_409_CONFLICT)
        run.refresh_from_db()  # the launch was sent (or noted as not sent) after the commit
        headers = {"Idempotent-Replayed": "true"} if getattr(run, "replayed", False) else {}
        return Response(s.RunDetailSerializer(run_selectors.run_detail(run)).data, status=status.HTTP_201_CREATED,
                        headers=headers)


class RunDetailView(MemberView):
    parser_classes = (BoundedJSONParser,)

    @extend_schema(tags=["runs"], responses={200: s.RunDetailSchema, 404: s.DetailSerializer})
    def get(self, request, run_id: int):
        run = run_or_404(request.user, run_id)
        return Response(s.RunDetailSerializer(run_selectors.run_detail(run)).data)

    @extend_schema(tags=["runs"], request=s.RunUpdateSerializer,
                   responses={200: s.RunDetailSchema, 400: s.ConfigErrorsSerializer, 403: s.DetailSerializer,
                              404: s.DetailSerializer})
    def patch(self, request, run_id: int):
        """Change what may change after the launch: the run's tags (launcher role)."""
        run = run_or_404(request.user, run_id)
        require_role(request.user, run.team_id, Role.LAUNCHER)
        data = validated(s.RunUpdateSerializer, request.data)
        run = run_tags_set(run=run, tags=data["tags"])
        return Response(s.RunDetailSerializer(run_selectors.run_detail(run)).data)


class RunResumeView(MemberView):
    @extend_schema(tags=["runs"], request=None,
                   responses={202: s.RunDetailSchema, 403: s.DetailSerializer, 404: s.DetailSerializer,
                              409: OpenApiResponse(s.DetailSerializer, description="not resumable (its status, or no "
                                                                                   "checkpoint), or over budget")})
    def post(self, request, run_id: int):
        """Queue a cancelled, failed or budget-stopped run to go on from its last checkpoint."""
        run = run_or_404(request.user, run_id)
        require_role(request.user, run.team_id, Role.LAUNCHER)
        try:
            run = run_resume(run=run, user=request.user)
        except RunStateError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        except BudgetExceeded as exc:
            return Response({"detail": str(exc), "forecast_device_hours": exc.forecast_device_hours,
                             "remaining_device_hours": exc.remaining_device_hours},
                            status=status.HTTP_409_CONFLICT)
        return Response(s.RunDetailSerializer(run_selectors.run_detail(run)).data, status=status.HTTP_202_ACCEPTED)


class RunCancelView(MemberView):
    @extend_schema(tags=["runs"], request=None,
                   responses={202: s.RunDetailSchema, 403: s.DetailSerializer, 404: s.DetailSerializer,
                              409: s.DetailSerializer})
    def post(self, request, run_id: int):
        run = run_or_404(request.user, run_id)
        require_role(request.user, run.team_id, Role.LAUNCHER)
        try:
            run = run_cancel(run=run)
        except RunStateError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(s.RunDetailSerializer(run_selectors.run_detail(run)).data, status=status.HTTP_202_ACCEPTED)


def _cursor_page(run, rows, serializer_class, after: int, limit: int) -> dict:
    return {"status": run.status, "next_after": rows[-1].step if rows else after,
            "has_more": len(rows) >= limit, "results": serializer_class(rows, many=True).data}


class RunStepsView(MemberView):
    @extend_schema(tags=["telemetry"], parameters=[s.AfterQuerySerializer],
                   responses={200: s.StepPageSerializer, 404: s.DetailSerializer})
    def get(self, request, run_id: int):
        run = run_or_404(request.user, run_id)
        after = validated(s.AfterQuerySerializer, request.query_params)["after"]
        rows = run_selectors.steps_after(run, after)
        return Response(_cursor_page(run, rows, s.StepSummarySerializer, after, run_selectors.CURSOR_LIMIT))


class RunEvaluationsView(MemberView):
    @extend_schema(tags=["telemetry"], parameters=[s.AfterQuerySerializer],
                   responses={200: s.EvaluationPageSerializer, 404: s.DetailSerializer})
    def get(self, request, run_id: int):
        run = run_or_404(request.user, run_id)
        after = validated(s.AfterQuerySerializer, request.query_params)["after"]
        rows = run_selectors.evaluations_after(run, after)
        return Response(_cursor_page(run, rows, s.EvaluationSerializer, after, run_selectors.CURSOR_LIMIT))


class RunDecisionsView(MemberView, generics.GenericAPIView):
    pagination_class = DecisionPagination
    serializer_class = s.DecisionSerializer

    def get_queryset(self):
        return run_selectors.decisions_query(run_or_404(self.request.user, self.kwargs["run_id"]))

    @extend_schema(tags=["telemetry"], parameters=[s.DecisionQuerySerializer],
                   responses={200: s.DecisionSerializer(many=True), 404: s.DetailSerializer})
    def get(self, request, run_id: int):
        run = run_or_404(request.user, run_id)
        filters = validated(s.DecisionQuerySerializer, request.query_params)
        page = self.paginate_queryset(run_selectors.decisions_query(run, **filters))
        return self.get_paginated_response(s.DecisionSerializer(page, many=True).data)


class RunPromptsView(MemberView, generics.GenericAPIView):
    pagination_class = PromptStatePagination
    serializer_class = s.PromptStateSerializer

    def get_queryset(self):
        return run_selectors.prompt_states(run_or_404(self.request.user, self.kwargs["run_id"]), None)

    @extend_schema(tags=["telemetry"], parameters=[s.PromptQuerySerializer],
                   responses={200: s.PromptStateSerializer(many=True), 404: s.DetailSerializer})
    def get(self, request, run_id: int):
        run = run_or_404(request.user, run_id)
        bucket = validated(s.PromptQuerySerializer, request.query_params).get("bucket")
        page = self.paginate_queryset(run_selectors.prompt_states(run, bucket))
        response = self.get_paginated_response(s.PromptStateSerializer(page, many=True).data)
        response.data["buckets"] = run_selectors.prompt_bucket_counts(run)
        return response


# -- budgets ----------------------------------------------------------------------------------------------


class TeamBudgetView(MemberView):
    @extend_schema(tags=["budgets"], responses={200: s.BudgetOverviewSerializer, 404: s.DetailSerializer})
    def get(self, request, slug: str):
        team = team_or_404(request.user, slug)
        return Response(s.BudgetOverviewSerializer(budget_overview(team)).data)


class TeamTelemetryRetentionView(MemberView):
    """GET (members): the team's telemetry retention. PUT (admins): set it; null keeps forever."""

    parser_classes = (BoundedJSONParser,)

    @extend_schema(tags=["teams"], responses={200: s.TelemetryRetentionSerializer, 404: s.DetailSerializer})
    def get(self, request, slug: str):
        team = team_or_404(request.user, slug)
        return Response(s.TelemetryRetentionSerializer(team).data)

    @extend_schema(tags=["teams"], request=s.TelemetryRetentionSerializer,
                   responses={200: s.TelemetryRetentionSerializer, 400: s.DetailSerializer, 403: s.DetailSerializer,
                              404: s.DetailSerializer})
    def put(self, request, slug: str):
        team = team_or_404(request.user, slug)
        require_role(request.user, team, Role.ADMIN)
        if not isinstance(request.data, dict) or "telemetry_retention_days" not in request.data:
            raise BadRequest({"telemetry_retention_days": ["required: whole days >= 1, or null to keep forever"]})
        try:
            team = team_set_telemetry_retention(team=team, days=request.data["telemetry_retention_days"],
                                                by=request.user)
        except TeamSettingInvalid as exc:
            raise BadRequest({"telemetry_retention_days": [exc.message]}) from exc
        return Response(s.TelemetryRetentionSerializer(team).data)


# -- ingestion ------------------------------------------------------------------------------------------------


# Transient server-side failures: the database refused for a moment (a lost connection, a lock
# or statement timeout, a deadlock or serialization failure, a restart). The engine retries after
# RETRY_AFTER_SECONDS; a 400 would make the verl HTTP sink set the event aside for good.
TRANSIENT_DB_ERRORS = (OperationalError, InterfaceError, InternalError)
RETRY_AFTER_SECONDS = 2
ATTEMPT_REPLACED = "attempt_replaced"  # the 400's code for an event of a replaced attempt: its engine stops


class IngestView(APIView):
    """A remote engine's telemetry sink: one event per request, run token only.

    Answers: 200 (stored; steps and heartbeats carry the control signal), 400 (a malformed
    record, or one the run takes no more: never worth retrying; ``"code": "attempt_replaced"``
    when the event's attempt was replaced and its engine must stop), 503 with Retry-After (the
    database failed for a moment: send the same event again)."""

    authentication_classes = (RunTokenAuthentication,)
    permission_classes = (RunTokenScoped,)
    parser_classes = (RecordJSONParser,)

    @extend_schema(
        tags=["ingest"],
        request=inline_serializer("IngestEvent", {
            "event": serializers.ChoiceField(choices=s.EVENTS, required=False,
                                             help_text="absent: a step record"),
        }),
        parameters=[OpenApiParameter("run_id", int, OpenApiParameter.PATH)],
        responses={200: OpenApiResponse(s.ControlSerializer,
                                        description='steps and heartbeats: {"control": ...}; '
                                                    'other events: {"ok": true}'),
                   400: OpenApiResponse(s.DetailSerializer, description='a malformed record; with "code": '
                                        '"attempt_replaced", an event of a replaced attempt (stop)'),
                   401: s.DetailSerializer, 403: s.DetailSerializer,
                   503: OpenApiResponse(s.DetailSerializer, description="transient: retry after Retry-After")},
    )
    def post(self, request, run_id: int):
        try:
            body = request.data
        except RecursionError as exc:  # the JSON parser's own limit: nested far deeper than any record
            raise exceptions.ParseError("the body is nested too deeply to be an event record") from exc
        if not isinstance(body, dict):
            raise exceptions.ParseError("the body must be one JSON object (an event)")
        event = body.get("event", "step")
        if event not in s.EVENTS:
            raise exceptions.ParseError(f"unknown event {event!r}; one of {', '.join(s.EVENTS)}")
        try:
            attempt = read_attempt(body.get("attempt"))  # replaced attempts are fenced off
        except RecordError as exc:
            raise exceptions.ParseError(str(exc)) from exc
        record = event_data(s.EventRecordSerializer, event, body)
        try:
            answer = telemetry.event_ingest(run_id=run_id, record=record, attempt=attempt)
        except telemetry.AttemptReplaced as exc:
            return Response({"detail": str(exc), "code": ATTEMPT_REPLACED}, status=status.HTTP_400_BAD_REQUEST)
        except (telemetry.IngestError, RecordError) as exc:
            raise exceptions.ParseError(str(exc)) from exc
        except (DataError, IntegrityError) as exc:
            # a value the record's checks let through but a column refused: the record's fault
            raise exceptions.ParseError(f"the {event} record was not stored: a value is out of its column's "
                                        f"range ({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc
        return Response({"control": str(answer)} if answer is not None else {"ok": True})

    def handle_exception(self, exc):
        """A transient database failure anywhere in the request (the run token's lookup
        included) is a 503 with Retry-After: the event's transaction rolled back whole, so
        the same event sent again is stored once."""
        if isinstance(exc, TRANSIENT_DB_ERRORS):
            return Response({"detail": "the event was not stored: the database failed for a moment "
                                       f"({type(exc).__name__}); try again in {RETRY_AFTER_SECONDS} s"},
                            status=status.HTTP_503_SERVICE_UNAVAILABLE,
                            headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        return super().handle_exception(exc)


def event_data(serializer_class, event: str, body: dict):
    """The event's typed record (``telemetry.EVENT_ROUTES``), or a 400 whose one-line detail
    names each bad part."""
    serializer = serializer_class(data=body, context={"event": event})
    try:
        valid = serializer.is_valid()
    except RecursionError as exc:
        raise exceptions.ParseError(f"bad {event} record: nested too deeply") from exc
    if not valid:
        problems = "; ".join(f"{name}: {' '.join(str(m) for m in messages)}"
                             for name, messages in serializer.errors.items())
        raise exceptions.ParseError(f"bad {event} record: {problems}")
    return serializer.validated_data
