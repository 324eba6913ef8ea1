"""Payloads of the media pipeline (`definitions/media_pipeline.yaml`): fan-out to transcoding,
thumbnails and metadata extraction, fan-in to publishing.

Every payload carries `asset_id`, the instance id. All types are at version 1.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from schemas.payloads.registry import Upcaster

Id = Annotated[str, StringConstraints(max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]
Uri = Annotated[str, StringConstraints(max_length=2048, pattern=r"^(s3|https)://[^\s]+$")]
ContentType = Annotated[
    str, StringConstraints(max_length=128, pattern=r"^(video|audio|image)/[a-z0-9.+-]+$")
]
Failure = Annotated[str, StringConstraints(min_length=1, max_length=1000)]
Profile = Literal["240p", "360p", "480p", "720p", "1080p", "2160p"]


class Payload(BaseModel):
    """Unknown fields are rejected and payloads never change after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class AssetUploaded(Payload):
    asset_id: Id
    uploader_id: Id
    filename: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    content_type: ContentType
    size_bytes: int = Field(gt=0, le=50 * 1024**3)  # the upload service caps files at 50 GiB
    source_uri: Uri


class Rendition(Payload):
    profile: Profile
    uri: Uri
    bitrate_kbps: int = Field(gt=0, le=100_000)


class TranscodeCompleted(Payload):
    asset_id: Id
    renditions: tuple[Rendition, ...] = Field(min_length=1, max_length=12)


class TranscodeFailed(Payload):
    asset_id: Id
    profile: Profile | None = None
    error: Failure


class ThumbnailCreated(Payload):
    asset_id: Id
    thumbnails: tuple[Uri, ...] = Field(min_length=1, max_length=20)


class ThumbnailFailed(Payload):
    asset_id: Id
    error: Failure


class MetadataExtracted(Payload):
    asset_id: Id
    duration_ms: int | None = Field(default=None, ge=0, le=7 * 24 * 3_600_000)
    width: int | None = Field(default=None, gt=0, le=16_384)
    height: int | None = Field(default=None, gt=0, le=16_384)
    codec: Annotated[str, StringConstraints(min_length=1, max_length=32)] | None = None


class RenditionsDeleted(Payload):
    asset_id: Id
    deleted: int = Field(ge=0, le=12)


class ThumbnailsDeleted(Payload):
    asset_id: Id
    deleted: int = Field(ge=0, le=20)


class ProcessingProgress(Payload):
    """Progress ticks from the workers; the definition ignores them."""

    asset_id: Id
    branch: Literal["transcode", "thumbnail", "metadata"]
    percent: int = Field(ge=0, le=100)


class UploadCancelled(Payload):
    asset_id: Id
    cancelled_by: Id


class AssetPublished(Payload):
    asset_id: Id
    public_url: Annotated[str, StringConstraints(max_length=2048, pattern=r"^https://[^\s]+$")]
    channels: tuple[Literal["web", "mobile", "partner_feed"], ...] = Field(
        min_length=1, max_length=3
    )


class PublishRejected(Payload):
    asset_id: Id
    policy: Literal["copyright", "explicit_content", "quality", "other"]
    reviewer_id: Id | None = None


MODELS: dict[tuple[str, int], type[BaseModel]] = {
    ("AssetUploaded", 1): AssetUploaded,
    ("TranscodeCompleted", 1): TranscodeCompleted,
    ("TranscodeFailed", 1): TranscodeFailed,
    ("ThumbnailCreated", 1): ThumbnailCreated,
    ("ThumbnailFailed", 1): ThumbnailFailed,
    ("MetadataExtracted", 1): MetadataExtracted,
    ("RenditionsDeleted", 1): RenditionsDeleted,
    ("ThumbnailsDeleted", 1): ThumbnailsDeleted,
    ("ProcessingProgress", 1): ProcessingProgress,
    ("UploadCancelled", 1): UploadCancelled,
    ("AssetPublished", 1): AssetPublished,
    ("PublishRejected", 1): PublishRejected,
}
UPCASTERS: dict[tuple[str, int], Upcaster] = {}
