//! Error answers in the OpenAI shape, `{"error":{"message","type","param","code"}}`,
//! so that clients exercise the same error paths they would against OpenAI.

use axum::extract::rejection::BytesRejection;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use serde_json::{Map, Value};

/// An answer that is an OpenAI error.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    /// Left out of the body when `None`, as OpenAI does for server errors.
    param: Option<&'static str>,
    code: Option<&'static str>,
}

impl ApiError {
    pub(crate) fn invalid_request(message: String) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message,
            kind: "invalid_request_error",
            param: None,
            code: None,
        }
    }

    pub(crate) fn model_not_found(model: &str) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("model `{model}` does not exist"),
            kind: "invalid_request_error",
            param: Some("model"),
            code: Some("model_not_found"),
        }
    }

    /// What `fault-500` answers.
    pub(crate) fn upstream_failure() -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "mock upstream failure".to_owned(),
            kind: "server_error",
            param: None,
            code: None,
        }
    }

    /// What a request still waiting on `fault-hang` gets when the server stops.
    pub(crate) fn shutting_down() -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "mock upstream is shutting down".to_owned(),
            kind: "server_error",
            param: None,
            code: None,
        }
    }

    pub(crate) fn unknown_url(method: &Method, path: &str) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("Invalid URL ({method} {path})"),
            kind: "invalid_request_error",
            param: None,
            code: Some("unknown_url"),
        }
    }

    pub(crate) fn method_not_allowed(method: &Method, path: &str) -> ApiError {
        ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: format!("method {method} is not allowed on {path}"),
            kind: "invalid_request_error",
            param: None,
            code: Some("method_not_allowed"),
        }
    }

    pub(crate) fn body_rejected(rejection: &BytesRejection) -> ApiError {
        ApiError {
            status: rejection.status(),
            message: rejection.body_text(),
            kind: "invalid_request_error",
            param: None,
            code: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = Map::new();
        error.insert("message".to_owned(), Value::String(self.message));
        error.insert("type".to_owned(), Value::from(self.kind));
        if let Some(param) = self.param {
            error.insert("param".to_owned(), Value::from(param));
        }
        error.insert(
            "code".to_owned(),
            self.code.map_or(Value::Null, Value::from),
        );
        let mut body = Map::new();
        body.insert("error".to_owned(), Value::Object(error));
        (self.status, Json(Value::Object(body))).into_response()
    }
}
