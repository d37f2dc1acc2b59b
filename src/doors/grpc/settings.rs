//! LogSettings and TraceSetting: the same settings as `/v2/logging` and `/v2/trace/setting`,
//! their maps turned into the JSON documents those endpoints take and give.

use serde_json::{Map, Value};

use super::pb;
use super::status::Status;
use crate::engine::{Engine, Error};
use crate::logging::Logging;

pub fn log_settings(
    logging: &Logging,
    request: &pb::LogSettingsRequest,
) -> Result<pb::LogSettingsResponse, Status> {
    use pb::log_settings_request::setting_value::ParameterChoice as In;
    use pb::log_settings_response::setting_value::ParameterChoice as Out;
    let settings = match request.settings.is_empty() {
        true => logging.settings(),
        false => {
            let update: Map<String, Value> = request
                .settings
                .iter()
                .map(|(key, value)| {
                    let value = match &value.parameter_choice {
                        Some(In::BoolParam(b)) => Value::from(*b),
                        Some(In::Uint32Param(n)) => Value::from(*n),
                        Some(In::StringParam(s)) => Value::from(s.as_str()),
                        None => Value::Null,
                    };
                    (key.clone(), value)
                })
                .collect();
            let body = Value::Object(update).to_string();
            logging.update(body.as_bytes()).map_err(Error::invalid)?
        }
    };
    let value = |choice| pb::log_settings_response::SettingValue {
        parameter_choice: Some(choice),
    };
    let settings = [
        ("log_file", value(Out::StringParam(settings.log_file))),
        ("log_info", value(Out::BoolParam(settings.log_info))),
        ("log_warning", value(Out::BoolParam(settings.log_warning))),
        ("log_error", value(Out::BoolParam(settings.log_error))),
        (
            "log_verbose_level",
            value(Out::Uint32Param(settings.log_verbose_level)),
        ),
        ("log_format", value(Out::StringParam(settings.log_format))),
    ];
    Ok(pb::LogSettingsResponse {
        settings: settings
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    })
}

pub fn trace_setting(
    engine: &Engine,
    request: &pb::TraceSettingRequest,
) -> Result<pb::TraceSettingResponse, Status> {
    let model = (!request.model_name.is_empty())
        .then(|| engine.model(&request.model_name))
        .transpose()?;
    let name = model.as_ref().map(|m| m.name.as_str());
    let tracer = engine.tracer();
    let settings = match request.settings.is_empty() {
        true => tracer.settings(name),
        false => {
            // Each value is a list of strings: trace_level is one, the others hold one string,
            // and an empty list restores the global value (JSON's null over REST).
            let update: Map<String, Value> = request
                .settings
                .iter()
                .map(|(key, setting)| {
                    let value = match (key.as_str(), setting.value.as_slice()) {
                        (_, []) => Value::Null,
                        ("trace_level", levels) => Value::from(levels.to_vec()),
                        (_, [one]) => Value::from(one.as_str()),
                        (_, many) => Value::from(many.to_vec()),
                    };
                    (key.clone(), value)
                })
                .collect();
            tracer.update(name, &update)?
        }
    };
    let Value::Object(settings) = settings else {
        return Err(Error::internal("trace settings are not a document").into());
    };
    Ok(pb::TraceSettingResponse {
        settings: settings
            .into_iter()
            .map(|(key, value)| {
                let value = match value {
                    Value::Array(items) => items
                        .into_iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect(),
                    Value::String(s) => vec![s],
                    other => vec![other.to_string()],
                };
                (key, pb::trace_setting_response::SettingValue { value })
            })
            .collect(),
    })
}
