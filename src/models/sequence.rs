//! Triton's sequence batching (`sequence_batching`), checked once at load into what the
//! engine's sequence batcher needs: the control tensors it feeds the model (START, END, READY,
//! CORRID), the implicit state it carries from one request of a sequence to the next, and how
//! it forms batches.

use std::path::Path;
use std::time::Duration;

use super::TensorSpec;
use crate::proto::inference as pb;
use crate::tensors::DataType;
use pb::model_sequence_batching as msb;

/// `sequence_batching` as written: Triton's own message. In `config.toml` it is the message in
/// protobuf's JSON mapping, written as TOML.
pub type SequenceBatching = super::proto_json::Proto<pb::ModelSequenceBatching>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlKind {
    Start,
    End,
    Ready,
    CorrId,
}

/// A control tensor the batcher feeds the model: [1] per row.
#[derive(Clone, Debug, PartialEq)]
pub struct Control {
    pub name: String,
    pub kind: ControlKind,
    pub datatype: DataType,
    /// The bytes of false and of true (none for CORRID, which carries the sequence's id).
    pub values: Option<[Vec<u8>; 2]>,
}

/// Implicit state: the model's `output` of one request is its `input` on the next request of
/// the same sequence; a sequence starts from `initial`.
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    pub input: String,
    pub output: String,
    pub datatype: DataType,
    /// Without the batch dimension; fixed sizes.
    pub dims: Vec<i64>,
    /// One sequence's starting value.
    pub initial: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Strategy {
    /// A batch goes once this share of the model's batch rows has a request ready (or the
    /// oldest has waited the delay).
    Direct { minimum_slot_utilization: f32 },
    /// Up to `max_candidates` sequences hold a slot; a batch goes at a preferred size (or the
    /// largest batch, or after the delay).
    Oldest {
        max_candidates: usize,
        preferred: Vec<u64>,
    },
}

/// What the sequence batcher does for a model.
#[derive(Clone, Debug, PartialEq)]
pub struct Sequencing {
    /// A sequence with no request for this long loses its slot.
    pub idle: Duration,
    pub max_queue_delay: Duration,
    pub strategy: Strategy,
    pub controls: Vec<Control>,
    pub states: Vec<State>,
}

impl Sequencing {
    /// Reads `sequence_batching`; initial state files come from `model_dir/initial_state/`.
    pub fn new(
        settings: &pb::ModelSequenceBatching,
        model_dir: &Path,
    ) -> Result<Sequencing, String> {
        let (max_queue_delay, strategy) = match &settings.strategy_choice {
            None => (
                0,
                Strategy::Direct {
                    minimum_slot_utilization: 0.0,
                },
            ),
            Some(msb::StrategyChoice::Direct(d)) => {
                if !(0.0..=1.0).contains(&d.minimum_slot_utilization) {
                    return Err(format!(
                        "key 'sequence_batching.direct.minimum_slot_utilization': {} is not in 0..=1",
                        d.minimum_slot_utilization
                    ));
                }
                let minimum_slot_utilization = d.minimum_slot_utilization;
                (
                    d.max_queue_delay_microseconds,
                    Strategy::Direct {
                        minimum_slot_utilization,
                    },
                )
            }
            Some(msb::StrategyChoice::Oldest(o)) => {
                let positive = |key: &str, n: i32| {
                    u64::try_from(n).ok().filter(|&n| n > 0).ok_or_else(|| {
                        format!("key 'sequence_batching.oldest.{key}': {n} is not positive")
                    })
                };
                let strategy = Strategy::Oldest {
                    max_candidates: positive("max_candidate_sequences", o.max_candidate_sequences)?
                        as usize,
                    preferred: (o.preferred_batch_size.iter())
                        .map(|&p| positive("preferred_batch_size", p))
                        .collect::<Result<_, _>>()?,
                };
                (o.max_queue_delay_microseconds, strategy)
            }
        };
        let controls = (settings.control_input.iter())
            .map(control)
            .collect::<Result<Vec<_>, _>>()?;
        for kind in [
            ControlKind::Start,
            ControlKind::End,
            ControlKind::Ready,
            ControlKind::CorrId,
        ] {
            if controls.iter().filter(|c| c.kind == kind).count() > 1 {
                return Err(format!(
                    "key 'sequence_batching.control_input': more than one {kind:?} control"
                ));
            }
        }
        let states = (settings.state.iter())
            .map(|s| state(s, model_dir))
            .collect::<Result<_, _>>()?;
        Ok(Sequencing {
            // Triton's default when unset (0).
            idle: Duration::from_micros(match settings.max_sequence_idle_microseconds {
                0 => 1_000_000,
                us => us,
            }),
            max_queue_delay: Duration::from_micros(max_queue_delay),
            strategy,
            controls,
            states,
        })
    }

    /// The model inputs the batcher feeds besides the client's: the controls, then the states'.
    pub fn inputs(&self, batching: bool) -> Vec<TensorSpec> {
        let controls = (self.controls.iter())
            .map(|c| TensorSpec::new(&c.name, c.datatype, &batched(batching, &[1])));
        let states = (self.states.iter())
            .map(|s| TensorSpec::new(&s.input, s.datatype, &batched(batching, &s.dims)));
        controls.chain(states).collect()
    }

    /// The states' outputs, as model outputs.
    pub fn outputs(&self, batching: bool) -> Vec<TensorSpec> {
        (self.states.iter())
            .map(|s| TensorSpec::new(&s.output, s.datatype, &batched(batching, &s.dims)))
            .collect()
    }

    /// Whether `name` is an input the batcher feeds (a control or a state's).
    pub fn feeds(&self, name: &str) -> bool {
        self.controls.iter().any(|c| c.name == name) || self.states.iter().any(|s| s.input == name)
    }
}

/// `dims` after a variable batch dimension when `batching`.
fn batched(batching: bool, dims: &[i64]) -> Vec<i64> {
    batching
        .then_some(-1)
        .into_iter()
        .chain(dims.iter().copied())
        .collect()
}

/// Refuses the settings of Triton's sequence batcher that tensord does not implement, rather
/// than ignoring them.
pub fn refuse_unimplemented(settings: &pb::ModelSequenceBatching) -> Result<(), String> {
    let refused = |key: &str| {
        Err(format!(
            "key 'sequence_batching.{key}': tensord implements only false (this Triton setting \
             is refused rather than ignored)"
        ))
    };
    if settings.iterative_sequence {
        return refused("iterative_sequence");
    }
    if let Some(msb::StrategyChoice::Oldest(o)) = &settings.strategy_choice {
        if o.preserve_ordering {
            return refused("oldest.preserve_ordering");
        }
    }
    for state in &settings.state {
        if state.use_same_buffer_for_input_output {
            return refused("state.use_same_buffer_for_input_output");
        }
        if state.use_growable_memory {
            return refused("state.use_growable_memory");
        }
    }
    Ok(())
}

fn control(input: &msb::ControlInput) -> Result<Control, String> {
    let at = format!("key 'sequence_batching.control_input' '{}'", input.name);
    let [c] = input.control.as_slice() else {
        return Err(format!("{at}: needs exactly one control"));
    };
    let kind = match msb::control::Kind::try_from(c.kind) {
        Ok(msb::control::Kind::ControlSequenceStart) => ControlKind::Start,
        Ok(msb::control::Kind::ControlSequenceEnd) => ControlKind::End,
        Ok(msb::control::Kind::ControlSequenceReady) => ControlKind::Ready,
        Ok(msb::control::Kind::ControlSequenceCorrid) => ControlKind::CorrId,
        _ => return Err(format!("{at}: unknown control kind {}", c.kind)),
    };
    if kind == ControlKind::CorrId {
        let datatype = match pb::DataType::try_from(c.data_type) {
            Ok(pb::DataType::TypeUint64) => DataType::Uint64,
            Ok(pb::DataType::TypeInt64) => DataType::Int64,
            Ok(pb::DataType::TypeUint32) => DataType::Uint32,
            Ok(pb::DataType::TypeInt32) => DataType::Int32,
            Ok(pb::DataType::TypeString) => DataType::Bytes,
            _ => {
                return Err(format!(
                    "{at}: a CORRID control takes data_type TYPE_UINT64, TYPE_INT64, TYPE_UINT32, \
                     TYPE_INT32 or TYPE_STRING"
                ))
            }
        };
        return Ok(Control {
            name: input.name.clone(),
            kind,
            datatype,
            values: None,
        });
    }
    let pair = |values: Vec<Vec<u8>>| -> Result<Option<[Vec<u8>; 2]>, String> {
        match <[Vec<u8>; 2]>::try_from(values) {
            Ok(pair) => Ok(Some(pair)),
            Err(v) if v.is_empty() => Ok(None),
            Err(_) => Err(format!("{at}: the false/true values must be two")),
        }
    };
    let written = [
        (
            DataType::Int32,
            pair(
                c.int32_false_true
                    .iter()
                    .map(|v| v.to_le_bytes().to_vec())
                    .collect(),
            )?,
        ),
        (
            DataType::Fp32,
            pair(
                c.fp32_false_true
                    .iter()
                    .map(|v| v.to_le_bytes().to_vec())
                    .collect(),
            )?,
        ),
        (
            DataType::Bool,
            pair(
                c.bool_false_true
                    .iter()
                    .map(|&v| vec![u8::from(v)])
                    .collect(),
            )?,
        ),
    ];
    let mut set = written.into_iter().filter_map(|(d, v)| v.map(|v| (d, v)));
    match (set.next(), set.next()) {
        (Some((datatype, values)), None) => Ok(Control {
            name: input.name.clone(),
            kind,
            datatype,
            values: Some(values),
        }),
        _ => Err(format!(
            "{at}: must specify exactly one of 'int32_false_true', 'fp32_false_true' or \
             'bool_false_true'"
        )),
    }
}

fn state(s: &msb::State, model_dir: &Path) -> Result<State, String> {
    let at = format!("key 'sequence_batching.state' '{}'", s.input_name);
    if s.input_name.is_empty() || s.output_name.is_empty() {
        return Err(format!("{at}: needs input_name and output_name"));
    }
    let datatype = tensor_datatype(s.data_type)
        .filter(|d| *d != DataType::Bytes)
        .ok_or_else(|| format!("{at}: data_type must be a fixed-size type"))?;
    if s.dims.is_empty() || s.dims.iter().any(|&d| d < 1) {
        return Err(format!("{at}: dims {:?} must be fixed sizes", s.dims));
    }
    let size = s.dims.iter().product::<i64>() as usize * datatype.element_size().unwrap_or(1);
    let initial = match s.initial_state.as_slice() {
        [] => vec![0; size],
        [init] => {
            if tensor_datatype(init.data_type) != Some(datatype) || init.dims != s.dims {
                return Err(format!(
                    "{at}: initial_state '{}' must have the state's data_type and dims",
                    init.name
                ));
            }
            match &init.state_data {
                Some(msb::initial_state::StateData::ZeroData(true)) => vec![0; size],
                Some(msb::initial_state::StateData::DataFile(file)) => {
                    let folder = model_dir.join("initial_state");
                    let path = super::inside(model_dir, &folder, "initial_state.data_file", file)?;
                    let bytes = std::fs::read(&path).map_err(|e| {
                        format!("{at}: initial_state data_file '{file}': {}", e.kind())
                    })?;
                    if bytes.len() != size {
                        return Err(format!(
                            "{at}: initial_state expects {size} bytes, but data_file '{file}' has {}",
                            bytes.len()
                        ));
                    }
                    bytes
                }
                _ => return Err(format!("{at}: initial_state needs zero_data or data_file")),
            }
        }
        _ => return Err(format!("{at}: at most one initial_state")),
    };
    Ok(State {
        input: s.input_name.clone(),
        output: s.output_name.clone(),
        datatype,
        dims: s.dims.clone(),
        initial,
    })
}

/// A config `data_type` as a tensor datatype (TYPE_STRING is BYTES).
fn tensor_datatype(data_type: i32) -> Option<DataType> {
    match pb::DataType::try_from(data_type).ok()?.as_str_name() {
        "TYPE_STRING" => Some(DataType::Bytes),
        named => DataType::parse(named.strip_prefix("TYPE_")?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ModelConfig;

    const PBTXT: &str = r#"
        name: "simple_dyna_sequence" platform: "onnxruntime_onnx" max_batch_size: 8
        sequence_batching {
          max_sequence_idle_microseconds: 10000000
          oldest { max_candidate_sequences: 1024 max_queue_delay_microseconds: 10000 }
          control_input [
            { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
            { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY fp32_false_true: [ 0, 1 ] } ] },
            { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_STRING } ] }
          ]
          state [ { input_name: "S" output_name: "S_OUT" data_type: TYPE_FP32 dims: [ 2 ] } ]
        }
        input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
        output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]"#;

    const TOML: &str = r#"
        backend = "onnx"
        max_batch_size = 8
        [[input]]
        name = "INPUT"
        datatype = "INT32"
        dims = [1]
        [[output]]
        name = "OUTPUT"
        datatype = "INT32"
        dims = [1]
        [sequence_batching]
        max_sequence_idle_microseconds = 10000000
        oldest = { max_candidate_sequences = 1024, max_queue_delay_microseconds = 10000 }
        control_input = [
          { name = "START", control = [{ kind = "CONTROL_SEQUENCE_START", int32_false_true = [0, 1] }] },
          { name = "READY", control = [{ kind = "CONTROL_SEQUENCE_READY", fp32_false_true = [0, 1] }] },
          { name = "CORRID", control = [{ kind = "CONTROL_SEQUENCE_CORRID", data_type = "TYPE_STRING" }] },
        ]
        state = [{ input_name = "S", output_name = "S_OUT", data_type = "TYPE_FP32", dims = [2] }]"#;

    fn sequencing(config: &ModelConfig) -> Result<Sequencing, String> {
        Sequencing::new(
            &config.sequence_batching.as_ref().unwrap().0,
            Path::new("/nowhere"),
        )
    }

    #[test]
    fn pbtxt_and_toml_give_the_same_settings() {
        let from_pbtxt = crate::models::triton_config::config_from_pbtxt(PBTXT).unwrap();
        let from_toml: ModelConfig = toml::from_str(TOML).unwrap();
        assert_eq!(from_pbtxt.sequence_batching, from_toml.sequence_batching);
        let s = sequencing(&from_toml).unwrap();
        assert_eq!(s.idle, Duration::from_secs(10));
        assert_eq!(s.max_queue_delay, Duration::from_millis(10));
        assert_eq!(
            s.strategy,
            Strategy::Oldest {
                max_candidates: 1024,
                preferred: vec![]
            }
        );
        let kinds: Vec<_> = s.controls.iter().map(|c| (c.kind, c.datatype)).collect();
        assert_eq!(
            kinds,
            [
                (ControlKind::Start, DataType::Int32),
                (ControlKind::Ready, DataType::Fp32),
                (ControlKind::CorrId, DataType::Bytes)
            ]
        );
        assert_eq!(
            s.controls[1].values,
            Some([0f32.to_le_bytes().to_vec(), 1f32.to_le_bytes().to_vec()])
        );
        assert_eq!(s.states[0].initial, vec![0; 8]);
        let names: Vec<_> = s
            .inputs(true)
            .into_iter()
            .map(|t| (t.name, t.dims))
            .collect();
        assert_eq!(names[0], ("START".to_string(), Some(vec![-1, 1])));
        assert_eq!(names[3], ("S".to_string(), Some(vec![-1, 2])));
        // Written back as TOML, the message reads back the same.
        let written = toml::to_string(&from_toml).unwrap();
        let back: ModelConfig = toml::from_str(&written).unwrap();
        assert_eq!(back.sequence_batching, from_toml.sequence_batching);
    }

    #[test]
    fn bad_and_unimplemented_settings_are_refused() {
        let with = |from: &str, to: &str| -> Result<Sequencing, String> {
            let config: ModelConfig =
                toml::from_str(&TOML.replace(from, to)).map_err(|e| e.to_string())?;
            config.validate()?;
            sequencing(&config)
        };
        let e = with("int32_false_true = [0, 1]", "int32_false_true = [0, 1, 2]").unwrap_err();
        assert!(
            e.contains("'START': the false/true values must be two"),
            "{e}"
        );
        let e = with(
            "int32_false_true = [0, 1]",
            "int32_false_true = [0, 1], bool_false_true = [false, true]",
        )
        .unwrap_err();
        assert!(e.contains("exactly one of"), "{e}");
        let e = with("TYPE_STRING", "TYPE_FP32").unwrap_err();
        assert!(e.contains("a CORRID control takes data_type"), "{e}");
        let e = with("dims = [2]", "dims = [-1]").unwrap_err();
        assert!(e.contains("must be fixed sizes"), "{e}");
        let e = with(
            "max_queue_delay_microseconds = 10000",
            "max_queue_delay_microseconds = 1, preserve_ordering = true",
        )
        .unwrap_err();
        assert!(
            e.contains(
                "'sequence_batching.oldest.preserve_ordering': tensord implements only false"
            ),
            "{e}"
        );
        let e = with(
            "max_candidate_sequences = 1024",
            "max_candidate_sequences = 0",
        )
        .unwrap_err();
        assert!(e.contains("not positive"), "{e}");
        let e = with("dims = [2] }]", "dims = [2], initial_state = [{ name = \"i\", data_type = \"TYPE_FP32\", dims = [2], data_file = \"../x\" }] }]")
            .unwrap_err();
        assert!(
            e.contains("must name a file inside the model's folder"),
            "{e}"
        );
        let e = with("max_sequence_idle", "sequence_idle").unwrap_err();
        assert!(e.contains("sequence_idle"), "{e}");
    }
}
