//! The OpenAPI 3.1 document served at `GET /openapi.json`. Paths come from the `#[utoipa::path]`
//! attribute on each handler, registered through `utoipa_axum::routes!`, so a route cannot exist
//! without its documentation (or the other way round); schemas come from the types the handlers
//! serialise (`views.rs`, the store's rows, the engines' reports), and request bodies from the
//! types the handlers parse them into (each handler's module for JSON bodies, the engines'
//! parameter types for the multipart forms, through [`Upload`]). [`finish`] adds what every
//! operation shares: the error envelope for `401` and `500`, and the `X-Soundcheck-Fault` header
//! on the submit endpoints.

use std::borrow::Cow;
use std::marker::PhantomData;

use serde_json::{json, Value};
use utoipa::openapi::schema::{
    AdditionalProperties, KnownFormat, Object, ObjectBuilder, Schema, SchemaFormat, SchemaType,
    Type,
};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::RefOr;
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

pub use crate::error::{Code, ErrorDetail, ErrorEnvelope};

/// Tag of the generations API (seed 000).
pub const GENERATIONS: &str = "generations";
/// Tag of the async jobs API (seed 003).
pub const JOBS: &str = "jobs";
/// Tag of the synchronous analysis endpoints.
pub const ANALYSIS: &str = "analysis";
/// Tag of the webhook admin API.
pub const WEBHOOK: &str = "webhook";
/// Tag of credits admin.
pub const CREDITS: &str = "credits";
/// Tag of result files.
pub const MEDIA: &str = "media";

/// The project's licence as an SPDX expression (`info.license.identifier`; the name says the same).
const LICENCE: &str = "MIT OR Apache-2.0";

/// The document's fixed parts; the paths are added by the routers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "soundcheck",
        description = "Local, offline emulation of two music-AI APIs: generations (X-API-Key) and \
                       async jobs with signed webhooks (Authorization: Bearer). Every error is \
                       {\"error\": {\"code\", \"message\", \"trace_id\"}}.",
        license(name = "MIT OR Apache-2.0")
    ),
    modifiers(&SecuritySchemes),
    components(schemas(ErrorEnvelope, ErrorDetail, Code)),
    tags(
        (name = "generations", description = "Text-to-music generations (seed 000), X-API-Key."),
        (name = "jobs", description = "Async jobs (seed 003), Bearer key, credits, webhooks."),
        (name = "analysis", description = "Synchronous analysis, Bearer key, free."),
        (name = "webhook", description = "The jobs webhook endpoint and its delivery log."),
        (name = "credits", description = "Balance, ledger and top-ups."),
        (name = "media", description = "Result files at expiring capability URLs."),
    )
)]
pub struct ApiDoc;

/// The two keys: `X-API-Key` (generations) and `Authorization: Bearer` (everything else).
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// A multipart upload: the `audio` file, and `P`'s fields as text parts (a job's parameters, see
/// `engines::JobParams`). Its schema is built from `P`'s rather than written, so the form cannot
/// drift from what the engine reads:
/// - `audio` comes first and is the only required part: every field has a default;
/// - no field is nullable: a form part is text or absent, never null;
/// - the form is closed (`additionalProperties: false`), so generated clients and fuzzers send
///   only what counts, although the job endpoints ignore other text fields (clients of the hosted
///   service may send their own; the synchronous analyses refuse them).
pub struct Upload<P>(PhantomData<P>);

impl<P: ToSchema> PartialSchema for Upload<P> {
    fn schema() -> RefOr<Schema> {
        let mut fields = object_schema::<P>();
        let audio = ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .description(Some("The audio file (any format the decoder reads)."))
            .build();
        let mut form = ObjectBuilder::new()
            .property("audio", audio)
            .required("audio")
            .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)))
            .build();
        form.description = fields.description.take();
        for (name, field) in std::mem::take(&mut fields.properties) {
            form.properties.insert(name, form_field(field));
        }
        RefOr::T(Schema::Object(form))
    }
}

/// A parameter's schema as a form field: one plain schema (an inline enum with its own
/// description comes wrapped in a one-item `oneOf`), never null, with no null default.
fn form_field(field: RefOr<Schema>) -> RefOr<Schema> {
    let mut field = match field {
        RefOr::T(Schema::OneOf(mut one)) if one.items.len() == 1 => match one.items.pop() {
            Some(RefOr::T(Schema::Object(mut o))) => {
                o.description = one.description.or(o.description);
                o.default = one.default.or(o.default);
                RefOr::T(Schema::Object(o))
            }
            Some(item) => item,
            None => unreachable!("one item"),
        },
        other => other,
    };
    if let RefOr::T(Schema::Object(o)) = &mut field {
        if let SchemaType::Array(types) = &o.schema_type {
            let types: Vec<Type> = types
                .iter()
                .filter(|t| **t != Type::Null)
                .cloned()
                .collect();
            o.schema_type = match types.as_slice() {
                [one] => SchemaType::Type(one.clone()),
                _ => SchemaType::Array(types),
            };
        }
        if o.default == Some(Value::Null) {
            o.default = None;
        }
    }
    field
}

impl<P: ToSchema> ToSchema for Upload<P> {
    /// `SeparateParams` → `SeparateForm`.
    fn name() -> Cow<'static, str> {
        Cow::Owned(format!("{}Form", P::name().trim_end_matches("Params")))
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        P::schemas(schemas);
    }
}

/// The object schema `T` derives, to build another on (an empty object if `T`'s is not one).
pub fn object_schema<T: ToSchema>() -> Object {
    match T::schema() {
        RefOr::T(Schema::Object(o)) => o,
        _ => Object::new(),
    }
}

/// `X-Soundcheck-Fault` values the document lists as examples of the grammar the description
/// gives (short delays, so generated requests stay cheap; `timeout` holds a worker for minutes).
const FAULT_VALUES: [&str; 8] = [
    "internal_error",
    "service_unavailable",
    "delay=100",
    "webhook_fail",
    "webhook_slow=100",
    "internal_error,webhook_fail",
    "delay=50,webhook_slow=50",
    "service_unavailable,webhook_slow=100",
];

/// Completes the generated document: `401` on every authenticated operation and `500` on every
/// API operation (both in the error envelope), the fault header on submits, and the installed
/// generators as the values of `model`.
pub fn finish(doc: utoipa::openapi::OpenApi, generators: &[String], base_url: &str) -> Value {
    let mut doc = serde_json::to_value(&doc).expect("the document serialises");
    // Generated clients take their base URL from here: this server's public URL.
    doc["servers"] = json!([{ "url": base_url, "description": "this soundcheck server" }]);
    // OpenAPI 3.1's SPDX expression beside the name.
    doc["info"]["license"]["identifier"] = json!(LICENCE);
    let envelope = |description: &str| {
        json!({
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
        })
    };
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            let Some(ops) = item.as_object_mut() else {
                continue;
            };
            for (method, op) in ops.iter_mut() {
                let secured = op.get("security").is_some();
                if !secured {
                    // Public on purpose (a media URL's token is the capability): say so, rather
                    // than leaving clients to guess a key.
                    op["security"] = json!([]);
                }
                let responses = op["responses"].as_object_mut().expect("responses");
                if secured {
                    responses
                        .entry("401")
                        .or_insert_with(|| envelope("unauthorized: missing or wrong key"));
                }
                if path.starts_with("/v1/") {
                    responses
                        .entry("500")
                        .or_insert_with(|| envelope("internal_error: our fault (see the log)"));
                }
                let params = op.get_mut("parameters").and_then(Value::as_array_mut);
                for param in params.into_iter().flatten() {
                    if param["name"] == "Idempotency-Key" {
                        // Printable ASCII, no surrounding spaces (they are trimmed), 1–255.
                        param["schema"] = json!({
                            "type": "string", "minLength": 1, "maxLength": 255,
                            "pattern": "^[!-~]([ -~]{0,253}[!-~])?$"
                        });
                    }
                }
                let submit = method == "post"
                    && matches!(
                        path.as_str(),
                        "/v1/generations"
                            | "/v1/separate"
                            | "/v1/transcribe"
                            | "/v1/master"
                            | "/v1/analyze/upload"
                    );
                if submit {
                    let params = op
                        .as_object_mut()
                        .expect("operation")
                        .entry("parameters")
                        .or_insert_with(|| json!([]));
                    params.as_array_mut().expect("parameters").push(json!({
                        "name": "X-Soundcheck-Fault",
                        "in": "header",
                        "required": false,
                        "description": "Fault injection: internal_error, service_unavailable, \
                                        timeout, delay=<ms>, webhook_fail, webhook_slow=<ms> \
                                        (one run fault and one webhook fault, comma-separated). \
                                        See docs/faults.md.",
                        "schema": {"type": "string", "enum": FAULT_VALUES}
                    }));
                }
            }
        }
    }
    if let Some(model) = doc
        .pointer_mut("/components/schemas/GenerationRequest/properties/model")
        .and_then(Value::as_object_mut)
    {
        let mut values: Vec<Value> = generators.iter().map(|g| json!(g)).collect();
        values.push(Value::Null);
        model.insert("enum".into(), Value::Array(values));
    }
    doc
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::engines::analyze::AnalyzeParams;
    use crate::engines::master::MasterParams;
    use crate::engines::separate::SeparateParams;
    use crate::engines::transcribe::TranscribeParams;
    use crate::engines::JobParams;

    /// Checks a form's schema against the parser of its fields: only `audio` is required and the
    /// form is closed; every documented bound and enumerated value is accepted, and a step past
    /// a bound is refused. Returns the fields checked.
    fn check_form<P: JobParams>() -> Vec<String> {
        let form = serde_json::to_value(Upload::<P>::schema()).unwrap();
        assert_eq!(form["required"], json!(["audio"]), "{form}");
        assert_eq!(form["additionalProperties"], false, "{form}");
        assert_eq!(form["properties"]["audio"]["format"], "binary");
        let parse = |name: &str, value: &str| {
            let mut fields = BTreeMap::from([(name.to_string(), value.to_string())]);
            // `bitrate` is documented as going with `format=mp3`.
            if name == "bitrate" {
                fields.insert("format".into(), "mp3".into());
            }
            P::from_fields(&fields)
        };
        let mut checked = Vec::new();
        for (name, field) in form["properties"].as_object().unwrap() {
            if name == "audio" {
                continue;
            }
            assert!(
                !field["type"].is_array() && field.get("default") != Some(&Value::Null),
                "{name}: a form field is never null: {field}"
            );
            assert!(
                field["type"].is_string(),
                "{name}: a form field is one plain schema: {field}"
            );
            if let (Some(min), Some(max)) = (field["minimum"].as_f64(), field["maximum"].as_f64()) {
                for ok in [min, max] {
                    assert!(parse(name, &ok.to_string()).is_ok(), "{name} = {ok}");
                }
                for bad in [min - 1.0, max + 1.0] {
                    assert!(parse(name, &bad.to_string()).is_err(), "{name} = {bad}");
                }
            }
            for value in field["enum"].as_array().into_iter().flatten() {
                let text = value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_string);
                assert!(parse(name, &text).is_ok(), "{name} = {text}");
            }
            if field["enum"].is_array() {
                assert!(parse(name, "nonsense").is_err(), "{name} = nonsense");
            }
            if field["type"] == "boolean" {
                for ok in ["true", "false"] {
                    assert!(parse(name, ok).is_ok(), "{name} = {ok}");
                }
                assert!(parse(name, "maybe").is_err(), "{name} = maybe");
            }
            checked.push(name.clone());
        }
        checked
    }

    #[test]
    fn every_form_documents_what_its_engine_reads() {
        assert_eq!(check_form::<SeparateParams>(), ["stems", "format"]);
        assert_eq!(
            check_form::<MasterParams>(),
            [
                "target_lufs",
                "true_peak_db",
                "format",
                "eq",
                "compress",
                "bitrate"
            ]
        );
        assert_eq!(
            check_form::<TranscribeParams>(),
            [
                "onset_threshold",
                "frame_threshold",
                "min_note_ms",
                "min_hz",
                "max_hz",
                "melodia_trick",
                "pitch_bends",
                "multiple_pitch_bends",
                "midi_tempo"
            ]
        );
        assert!(check_form::<AnalyzeParams>().is_empty());
        assert_eq!(Upload::<SeparateParams>::name(), "SeparateForm");
        assert_eq!(Upload::<AnalyzeParams>::name(), "AnalyzeForm");
    }
}
