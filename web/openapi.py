"""The OpenAPI 3.1 document for /api/openapi.json, built from the same constants the code uses.

Kept as Python rather than a static file so limits (k, sizes, modes) cannot
drift from the validators; tests check every documented path is a real route
and every API route is documented.
"""

from __future__ import annotations

from search.engine import MAX_K
from search.query.args import MAX_QUERY_CHARS
from search.vectors.duplicates import DEFAULT_THRESHOLD
from web import thumbs
from web.duplicates import GROUPS_PER_PAGE
from web.params import DEFAULT_K, MAX_PAGE_K, MODES, ORDERS


def _q(name: str, schema: dict, description: str, required: bool = False) -> dict:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


BLANK = "A parameter given with an empty value (k=) is a 400, not the default: leave it out instead."
PAGING = [
    _q("k", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_K, "default": DEFAULT_K}, "Results per page."),
    _q(
        "page",
        {"type": "integer", "minimum": 0, "maximum": MAX_K - 1, "default": 0},
        f"Page number from 0; (page + 1) * k may not exceed {MAX_K} (the paging cap; deeper is a 400).",
    ),
]
FILTERS = [
    _q(
        "min_score",
        {"oneOf": [{"type": "number", "minimum": -1, "maximum": 1}, {"type": "string", "enum": ["auto"]}]},
        "Drop results below this cosine similarity; auto: below the index's relevance floor "
        "(the response's floor; no cut where it is null).",
    ),
    _q(
        "folder",
        {"type": "string", "minLength": 1, "pattern": "^/"},
        "Only images under this folder (the folder itself or below it; /a/b does not hold /a/bc): an absolute, "
        "normalised path on the server such as /photos/2024, a trailing '/' allowed; '..', '.', '~', '//' "
        "and NUL are a 400. As listed by /api/stats roots.",
    ),
    _q(
        "date_from",
        {"type": "string", "format": "date"},
        "Only images taken (EXIF) or modified on or after this day (0001-01-01 to 9999-12-31); after date_to: 400.",
    ),
    _q("date_to", {"type": "string", "format": "date"}, "Only images taken or modified on or before this day."),
    _q(
        "order",
        {"type": "string", "enum": list(ORDERS), "default": ORDERS[0]},
        "relevance, or date: newest first within the most relevant results.",
    ),
]
IMAGE_ID = {"name": "image_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}}
MOMENT = {"type": "number", "minimum": 0}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERRORS = {
    400: "Bad parameter (out of its range, blank, or not of its type), or a malformed request",
    401: "Login required, or a wrong one (only when a users file names someone)",
    403: "Host header not allowed (GLIMPSE_ALLOWED_HOSTS)",
    404: "No such image, or its file is not the one indexed any more",
    413: "Body (or the image's pixels) over the server's limit",
    415: "Not a supported image",
    416: "Range not satisfiable (a valid single range past the file's end; any other Range is ignored)",
    429: "Too many failed logins from this address (Retry-After says when to try again)",
    503: "Nothing indexed yet, or the server's users file cannot be read",
}
# What any route can answer, whatever it does: the request line and headers (400), a body over the cap
# (413, also on a GET), the host check, the login and its rate limit, an unreadable users file (503).
EVERY_ROUTE = (400, 401, 403, 413, 429, 503)


def _errors(*codes: int) -> dict:
    return {str(c): _json(_ref("Error"), ERRORS[c]) for c in sorted({*codes, *EVERY_ROUTE})}


# Conditional and range answers of the file and thumbnail routes (ETag, Last-Modified, Range).
PARTIAL = {
    "206": {"description": "One byte range (Range: bytes=…); an invalid or multi-range header is ignored (200)"},
    "304": {"description": "Not modified (If-None-Match, If-Modified-Since)"},
    "412": {"description": "Precondition failed (If-Match)"},
}
NULLABLE_STR = {"type": ["string", "null"]}
NULLABLE_INT = {"type": ["integer", "null"]}

SCHEMAS = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "Image": {
        "type": "object",
        "required": ["id", "path", "caption", "width", "height", "thumb_url", "file_url"],
        "properties": {
            "id": {"type": "integer"},
            "path": {"type": "string"},
            "caption": NULLABLE_STR,
            "width": NULLABLE_INT,
            "height": NULLABLE_INT,
            "format": NULLABLE_STR,
            "size": NULLABLE_INT,
            "date": {**NULLABLE_STR, "description": "EXIF capture time, else file mtime (ISO 8601)"},
            "folder": NULLABLE_STR,
            "thumb_url": {"type": "string"},
            "file_url": {"type": "string"},
            "similar_url": {"type": "string"},
            "page_url": {"type": "string"},
        },
    },
    "Result": {
        "allOf": [
            _ref("Image"),
            {
                "type": "object",
                "required": ["score"],
                "properties": {
                    "score": {
                        "type": ["number", "null"],
                        "description": "cosine similarity; null in mode=keywords, whose ranking (bm25) has no "
                        "similarity to give (min_score does not apply there)",
                    },
                    "matched_caption": {**NULLABLE_STR, "description": "mode=captions: the caption that matched"},
                    "matched": {
                        "type": "array",
                        "items": {"type": "string", "enum": ["image", "keywords", "caption", "text"]},
                        "description": "why it matched: the vision ranking, the keyword index (file name, folder, "
                        "captions), caption vectors, the text read in the image (shown in text)",
                    },
                    "matched_text": {**NULLABLE_STR, "description": "the caption or file name that matched"},
                    "matched_spans": {
                        "type": ["array", "null"],
                        "items": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
                        "description": "[start, end) of each matched word in matched_text",
                    },
                    "kind": {
                        "type": "string",
                        "enum": ["image", "video"],
                        "description": "a video is one result: its best-matching moment",
                    },
                    "time": {
                        "type": ["number", "null"],
                        "description": "video: seconds from the start of the best-matching frame",
                    },
                    "duration": {"type": ["number", "null"], "description": "video: its length in seconds"},
                    "moments": {
                        "type": ["array", "null"],
                        "maxItems": 5,
                        "items": {
                            "type": "object",
                            "required": ["time", "score"],
                            "properties": {"time": {"type": "number"}, "score": {"type": ["number", "null"]}},
                        },
                        "description": "video: up to 5 other matching moments, best first",
                    },
                    "text": {
                        **NULLABLE_STR,
                        "description": "the text read in the image, its lines joined by newlines (at most ~500 "
                        "characters: around the first matched word, cut at words, with an ellipsis)",
                    },
                    "text_spans": {
                        "type": ["array", "null"],
                        "items": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
                        "description": "[start, end) of each matched word in text",
                    },
                },
            },
        ]
    },
    "ImageDetail": {
        "allOf": [
            _ref("Image"),
            {
                "type": "object",
                "properties": {
                    "captions": {"type": "array", "items": {"type": "string"}},
                    "scenes": {
                        "type": "array",
                        "items": {"type": "number"},
                        "description": "a video: the times (seconds) of the frames its index kept (its cuts, and "
                        "at least one every GLIMPSE_VIDEO_FLOOR_S), in order; a thumb?t= of each shows it",
                    },
                },
            },
        ]
    },
    "SearchResponse": {
        "type": "object",
        "required": ["query", "k", "page", "has_more", "floor", "results"],
        "properties": {
            "query": {"description": "the text query, or {kind: image|similar, …}"},
            "mode": {"type": "string", "enum": list(MODES)},
            "k": {"type": "integer"},
            "page": {"type": "integer"},
            "has_more": {"type": "boolean", "description": "another page exists"},
            "floor": {
                "type": ["number", "null"],
                "description": "relevance floor of the live index for text queries against images: results "
                "below it score no better than unrelated images do (estimated at each publish); null where "
                "unknown (other query kinds, an index published before floors)",
            },
            "results": {"type": "array", "items": _ref("Result")},
        },
    },
    "Duplicates": {
        "type": "object",
        "required": ["threshold", "max_distance", "without_print", "page", "has_more", "groups"],
        "properties": {
            "threshold": {"type": "number", "description": "the candidates' cosine"},
            "max_distance": {
                "type": "number",
                "description": "the largest pixel-print distance verifying a pair (GLIMPSE_DUPLICATES_MAX_DISTANCE)",
            },
            "without_print": {
                "type": "integer",
                "description": "indexed images not checked: no pixel print yet (the next index run stores them)",
            },
            "page": {"type": "integer"},
            "has_more": {"type": "boolean", "description": "another page of groups exists"},
            "groups": {
                "type": "array",
                "items": {
                    "type": "object",
                    "description": "images verified against the representative, in keep order",
                    "required": ["keep", "representative", "verified_by", "images", "min_score"],
                    "properties": {
                        "keep": {
                            "type": "integer",
                            "description": "the image to keep: most pixels, then largest file, then oldest",
                        },
                        "representative": {
                            "type": "integer",
                            "description": "the image every other one was verified against",
                        },
                        "verified_by": {"type": "string", "description": "the pixel signal's name"},
                        "images": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["id", "path", "size", "width", "height", "date", "distance"],
                                "properties": {
                                    "id": {"type": "integer"},
                                    "distance": {
                                        "type": "number",
                                        "description": "pixel distance to the representative (0 for itself)",
                                    },
                                    "path": {"type": "string"},
                                    "size": NULLABLE_INT,
                                    "width": NULLABLE_INT,
                                    "height": NULLABLE_INT,
                                    "date": NULLABLE_STR,
                                    "thumb_url": {"type": "string"},
                                    "file_url": {"type": "string"},
                                    "page_url": {"type": "string"},
                                },
                            },
                        },
                        "min_score": {
                            "type": "number",
                            "description": "the lowest cosine of a member to the representative",
                        },
                    },
                },
            },
        },
    },
    "KnnQuery": {
        "type": "object",
        "description": "clip-retrieval's knn request: one of text, image, image_url, embedding_input (the first "
        "given, in that order, is the query; none is a 400).",
        "anyOf": [
            {"required": ["text"], "properties": {"text": {"type": "string", "minLength": 1}}},
            {"required": ["image"], "properties": {"image": {"type": "string", "minLength": 1}}},
            {"required": ["image_url"], "properties": {"image_url": {"type": "string", "minLength": 1}}},
            {"required": ["embedding_input"], "properties": {"embedding_input": {"type": "array", "minItems": 1}}},
        ],
        "properties": {
            "text": {**NULLABLE_STR, "maxLength": MAX_QUERY_CHARS},
            "image": {**NULLABLE_STR, "description": "base64 image bytes"},
            "image_url": {**NULLABLE_STR, "description": "refused unless GLIMPSE_ALLOW_IMAGE_URL is on"},
            "embedding_input": {"type": ["array", "null"], "items": {"type": "number"}},
            "modality": {
                "type": "string",
                "enum": ["image", "text"],
                "default": "image",
                "description": "image: search image vectors; text: search caption vectors (text queries)",
            },
            "num_images": {"type": "integer", "minimum": 1, "default": 40},
            "num_result_ids": {"type": "integer", "minimum": 1, "maximum": MAX_K},
            "indice_name": NULLABLE_STR,
            "deduplicate": {"type": "boolean", "default": False},
            "use_mclip": {"type": "boolean"},
            "use_safety_model": {"type": "boolean"},
            "use_violence_detector": {"type": "boolean"},
            "aesthetic_score": {},
            "aesthetic_weight": {},
        },
    },
    "KnnResult": {
        "type": "object",
        "required": ["id", "similarity"],
        "properties": {
            "id": {"type": "integer"},
            "similarity": {"type": "number"},
            "url": {"type": "string"},
            "image_path": {"type": "string"},
            "caption": NULLABLE_STR,
            "time": {"type": ["number", "null"], "description": "a video's moment (seconds); url is the video's"},
        },
    },
}


def openapi_document() -> dict:
    """The API as this server implements it."""
    search_ok = _json(_ref("SearchResponse"))
    paths = {
        "/api/search": {
            "get": {
                "summary": "Search images by text (combined queries like '2:beach + sunset - people' allowed)",
                "parameters": [
                    _q(
                        "q",
                        {"type": "string", "minLength": 1, "maxLength": MAX_QUERY_CHARS, "pattern": "\\S"},
                        f"The query text, at most {MAX_QUERY_CHARS} characters; blank is a 400.",
                        required=True,
                    ),
                    _q(
                        "mode",
                        {"type": "string", "enum": list(MODES), "default": MODES[0]},
                        "auto: vision and keyword (file name, folder, caption words) rankings fused when any "
                        "word matches, else vision only; images: text against image vectors only; captions: text "
                        "against caption vectors; keywords: the keyword index only (score null).",
                    ),
                    *PAGING,
                    *FILTERS,
                ],
                "responses": {"200": search_ok, **_errors(400, 503)},
            }
        },
        "/api/search/image": {
            "post": {
                "summary": "Search by an uploaded image",
                "parameters": [*PAGING, *FILTERS],
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["image"],
                                "properties": {"image": {"type": "string", "format": "binary"}},
                            }
                        }
                    },
                },
                "responses": {"200": search_ok, **_errors(400, 413, 415, 503)},
            }
        },
        "/api/images/{image_id}/similar": {
            "get": {
                "summary": "More like this: neighbours of an indexed image, itself excluded (of a video: of its "
                "moment t, the video excluded)",
                "parameters": [
                    IMAGE_ID,
                    _q(
                        "t",
                        MOMENT,
                        "A video's moment in seconds (0 to its duration + 1): the neighbours of its frame nearest t; "
                        "without t, of its poster frame. On an image: 400.",
                    ),
                    *PAGING,
                    *FILTERS,
                ],
                "responses": {"200": search_ok, **_errors(400, 404, 503)},
            }
        },
        "/api/images/{image_id}": {
            "get": {
                "summary": "Metadata of one image",
                "parameters": [IMAGE_ID],
                "responses": {"200": _json(_ref("ImageDetail")), **_errors(404)},
            }
        },
        "/api/images/{image_id}/thumb": {
            "get": {
                "summary": "JPEG thumbnail, made on demand and cached; ETag and Cache-Control set",
                "parameters": [
                    IMAGE_ID,
                    _q(
                        "size",
                        {"type": "integer", "enum": list(thumbs.SIZES), "default": thumbs.DEFAULT_SIZE},
                        "Longest side in pixels.",
                    ),
                    _q(
                        "t",
                        MOMENT,
                        "A video's moment in seconds (0 to its duration + 1, else 400): the frame shown then; "
                        "without t, the poster frame. Ignored for an image.",
                    ),
                ],
                "responses": {
                    "200": {"description": "JPEG", "content": {"image/jpeg": {}}},
                    **PARTIAL,
                    **_errors(404, 416),
                },
            }
        },
        "/api/images/{image_id}/file": {
            "get": {
                "summary": "The original file, by id only; a video streams with Range requests (206)",
                "parameters": [IMAGE_ID],
                "responses": {
                    "200": {"description": "The image or video file", "content": {"image/*": {}, "video/*": {}}},
                    **PARTIAL,
                    **_errors(404, 416),
                },
            }
        },
        "/api/health": {
            "get": {
                "summary": "Liveness; no model call. Open without a login; behind one, a request without "
                "credentials gets only {status}",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["status"],
                            "properties": {
                                "status": {"type": "string"},
                                "images_indexed": {"type": "integer"},
                                "index_version": NULLABLE_STR,
                            },
                        }
                    ),
                    **_errors(),
                },
            }
        },
        "/api/stats": {
            "get": {
                "summary": "Counts, model, index version, failed files, roots, recent jobs",
                "responses": {"200": _json({"type": "object"}), **_errors()},
            }
        },
        "/api/duplicates": {
            "get": {
                "summary": "Near-duplicate groups (read-only: nothing is deleted), most images first, "
                f"{GROUPS_PER_PAGE} groups a page; each group largest (pixels) then newest first",
                "parameters": [
                    _q(
                        "threshold",
                        {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": DEFAULT_THRESHOLD},
                        "Cosine similarity at or above which two images are near-duplicates.",
                    ),
                    _q("page", {"type": "integer", "minimum": 0, "default": 0}, "Page of groups, from 0."),
                ],
                "responses": {"200": _json(_ref("Duplicates")), **_errors(400, 503)},
            }
        },
        "/api/openapi.json": {
            "get": {"summary": "This document", "responses": {"200": _json({"type": "object"}), **_errors()}}
        },
        "/knn-service": {
            "post": {
                "summary": "clip-retrieval compatible k-NN (body parsed as JSON whatever the Content-Type)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("KnnQuery")}}},
                "responses": {
                    "200": _json(
                        {"type": "array", "items": _ref("KnnResult")},
                        "Best first; url/image_path/caption only for the first num_images",
                    ),
                    **_errors(400, 413, 415, 503),
                },
            }
        },
        "/indices-list": {
            "get": {
                "summary": "clip-retrieval: index names",
                "responses": {"200": _json({"type": "array", "items": {"type": "string"}}), **_errors()},
            }
        },
        "/metadata": {
            "post": {
                "summary": "clip-retrieval: metadata of result ids",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["ids"],
                                "properties": {
                                    "ids": {"type": "array", "items": {"type": "integer"}},
                                    "indice_name": NULLABLE_STR,
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(
                        {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {"id": {"type": "integer"}, "metadata": {"type": "object"}},
                            },
                        }
                    ),
                    **_errors(400),
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Glimpse",
            "version": "1",
            "description": 'Self-hosted cross-modal image search. Errors are JSON {"error": …}. '
            "Files are served by id only.",
        },
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }
