//! RepositoryIndex, RepositoryModelLoad and RepositoryModelUnload. KServe's protos put
//! `model_name` in field 1, where Triton's have `repository_name`: a request with only field 1
//! set is read as KServe's. Load answers in KServe's shape (model name, loaded), which Triton's
//! clients read as their empty response.

use prost::Message;

use super::pb;
use super::status::Status;
use crate::engine::{Engine, Error, Overrides};

pub fn index(
    engine: &Engine,
    request: &pb::RepositoryIndexRequest,
) -> Result<pb::RepositoryIndexResponse, Status> {
    Ok(crate::doors::documents::repository_index(
        engine,
        request.ready,
    )?)
}

/// KServe's load and unload responses: the model's name and whether it is (un)loaded.
#[derive(Clone, PartialEq, Message)]
pub struct Done {
    #[prost(string, tag = "1")]
    pub model_name: String,
    #[prost(bool, tag = "2")]
    pub done: bool,
}

/// The model a load or unload names, in either numbering.
fn model_name(repository_name: &str, model_name: &str) -> Result<String, Status> {
    match (model_name, repository_name) {
        ("", "") => Err(Error::invalid("the request names no model").into()),
        ("", kserve) => Ok(kserve.to_string()),
        (triton, _) => Ok(triton.to_string()),
    }
}

pub async fn load(
    engine: &Engine,
    request: pb::RepositoryModelLoadRequest,
) -> Result<Done, Status> {
    use pb::model_repository_parameter::ParameterChoice;
    let name = model_name(&request.repository_name, &request.model_name)?;
    let mut overrides = Overrides::default();
    for (key, value) in request.parameters {
        let value = value.parameter_choice;
        match (key.as_str(), value) {
            ("config", Some(ParameterChoice::StringParam(text))) => {
                overrides.set_config(&text)?;
            }
            (file, Some(ParameterChoice::BytesParam(contents))) if file.starts_with("file:") => {
                overrides
                    .files
                    .push((file["file:".len()..].to_string(), contents.to_vec()));
            }
            (key, _) => {
                return Err(Error::invalid(format!(
                    "unknown or mistyped load parameter '{key}' (config: a string; \
                     file:<version>/<file>: bytes)"
                ))
                .into())
            }
        }
    }
    engine.load(&name, overrides).await?;
    Ok(Done {
        model_name: name,
        done: true,
    })
}

pub fn unload(engine: &Engine, request: &pb::RepositoryModelUnloadRequest) -> Result<Done, Status> {
    use pb::model_repository_parameter::ParameterChoice;
    let name = model_name(&request.repository_name, &request.model_name)?;
    let mut dependents = false;
    for (key, value) in &request.parameters {
        match (key.as_str(), &value.parameter_choice) {
            ("unload_dependents", Some(ParameterChoice::BoolParam(b))) => dependents = *b,
            _ => {
                return Err(Error::invalid(format!(
                    "unknown or mistyped unload parameter '{key}' (unload_dependents: a bool)"
                ))
                .into())
            }
        }
    }
    engine.unload(&name, dependents)?;
    Ok(Done {
        model_name: name,
        done: true,
    })
}
