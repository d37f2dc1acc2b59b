//! The built-in stateful models of Triton's sequence examples (`simple_*_sequence_*_client.py`),
//! computed row by row from the controls the sequence batcher feeds them.

use bytes::Bytes;

use super::builtin::Builtin;
use crate::models::{Model, ModelError, TensorSpec};
use crate::tensors::{DataType, Tensor};

#[derive(Clone, Copy)]
enum Kind {
    /// OUTPUT = READY·(INPUT + START), as Triton's simple_sequence graph.
    Simple,
    /// OUTPUT = READY·(INPUT + START + END·CORRID), as Triton's simple_dyna_sequence graph.
    Dyna,
    /// An accumulator with implicit state: ACCUMULATOR_NEXT = (START ? 0 : ACCUMULATOR) +
    /// INPUT; OUTPUT = ACCUMULATOR_NEXT, plus the CORRID string read as an integer on END.
    StringDyna,
}

pub fn builtin(name: &str) -> Option<Builtin> {
    let kind = match name {
        "simple_sequence" => Kind::Simple,
        "simple_dyna_sequence" => Kind::Dyna,
        "simple_string_dyna_sequence" => Kind::StringDyna,
        _ => return None,
    };
    let int32 = |name: &str| TensorSpec::new(name, DataType::Int32, &[-1, 1]);
    let (inputs, outputs) = match kind {
        Kind::Simple => (
            ["INPUT", "START", "READY"].map(int32).to_vec(),
            vec![int32("OUTPUT")],
        ),
        Kind::Dyna => {
            let mut inputs = ["INPUT", "START", "END", "READY"].map(int32).to_vec();
            inputs.push(TensorSpec::new("CORRID", DataType::Uint64, &[-1, 1]));
            (inputs, vec![int32("OUTPUT")])
        }
        Kind::StringDyna => {
            let mut inputs = ["INPUT", "START", "END", "READY"].map(int32).to_vec();
            inputs.push(TensorSpec::new("CORRID", DataType::Bytes, &[-1, 1]));
            inputs.push(int32("ACCUMULATOR"));
            (inputs, vec![int32("OUTPUT"), int32("ACCUMULATOR_NEXT")])
        }
    };
    Some(Builtin {
        inputs,
        outputs,
        model: Box::new(Stepper(kind)),
    })
}

struct Stepper(Kind);

fn int32s(t: &Tensor) -> impl Iterator<Item = i32> + '_ {
    t.data
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The CORRID of each row, as the integer the model adds.
fn corrids(kind: Kind, t: &Tensor) -> Result<Vec<i32>, ModelError> {
    match kind {
        Kind::StringDyna => (t.bytes_elements())
            .map(|id| {
                let text = String::from_utf8_lossy(id);
                text.parse::<i64>()
                    .map(|n| n as i32)
                    .map_err(|_| ModelError::invalid(format!("CORRID '{text}' is not an integer")))
            })
            .collect(),
        _ => Ok((t.data.chunks_exact(8))
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()) as i32)
            .collect()),
    }
}

impl Model for Stepper {
    fn execute(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, ModelError> {
        let kind = self.0;
        let (input, start, end, ready, corrid, state) = match (kind, inputs) {
            (Kind::Simple, [i, s, r]) => (i, s, None, r, None, None),
            (Kind::Dyna, [i, s, e, r, c]) => (i, s, Some(e), r, Some(c), None),
            (Kind::StringDyna, [i, s, e, r, c, a]) => (i, s, Some(e), r, Some(c), Some(a)),
            _ => {
                return Err(ModelError::internal(
                    "a sequence model got the wrong inputs",
                ))
            }
        };
        let rows = input.shape.first().copied().unwrap_or(1) as usize;
        let ends: Vec<i32> = end.map_or(vec![0; rows], |e| int32s(e).collect());
        let ids = corrid.map_or(Ok(vec![0; rows]), |c| corrids(kind, c))?;
        let states: Vec<i32> = state.map_or(vec![0; rows], |a| int32s(a).collect());
        let (mut output, mut next) = (Vec::with_capacity(rows * 4), Vec::with_capacity(rows * 4));
        let rows_of = (int32s(input).zip(int32s(start)).zip(int32s(ready)))
            .zip(ends.iter().zip(&ids).zip(&states));
        for (((value, start), ready), ((end, id), state)) in rows_of {
            let (out, acc) = match kind {
                Kind::StringDyna => {
                    let acc = if start != 0 { 0 } else { *state }.wrapping_add(value);
                    (acc.wrapping_add(end * id), acc)
                }
                _ => {
                    let sum = value
                        .wrapping_add(start)
                        .wrapping_add(end.wrapping_mul(*id));
                    (ready.wrapping_mul(sum), 0)
                }
            };
            output.extend_from_slice(&out.to_le_bytes());
            next.extend_from_slice(&acc.to_le_bytes());
        }
        let tensor = |data: Vec<u8>| Tensor {
            datatype: DataType::Int32,
            shape: vec![rows as u64, 1],
            data: Bytes::from(data),
        };
        Ok(match kind {
            Kind::StringDyna => vec![tensor(output), tensor(next)],
            _ => vec![tensor(output)],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(datatype: DataType, data: Vec<u8>, rows: u64) -> Tensor {
        Tensor::new(datatype, vec![rows, 1], data.into(), 100).unwrap()
    }

    fn int32(values: &[i32]) -> Tensor {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        column(DataType::Int32, data, values.len() as u64)
    }

    #[test]
    fn the_examples_models_compute_as_tritons() {
        let simple = builtin("simple_sequence").unwrap().model;
        let out = simple
            .execute(&[int32(&[5, 7]), int32(&[1, 0]), int32(&[1, 1])])
            .unwrap();
        assert_eq!(out, vec![int32(&[6, 7])]);
        let dyna = builtin("simple_dyna_sequence").unwrap().model;
        let ids = [1000u64, 1001]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let inputs = [
            int32(&[5, 7]),
            int32(&[0, 0]),
            int32(&[1, 0]),
            int32(&[1, 1]),
        ];
        let mut inputs = inputs.to_vec();
        inputs.push(column(DataType::Uint64, ids, 2));
        assert_eq!(dyna.execute(&inputs).unwrap(), vec![int32(&[1005, 7])]);
        let accumulator = builtin("simple_string_dyna_sequence").unwrap().model;
        let mut ids = Vec::new();
        for id in [&b"1002"[..], b"x"] {
            crate::tensors::push_bytes_element(&mut ids, id).unwrap();
        }
        let mut inputs = [
            int32(&[5, 7]),
            int32(&[0, 1]),
            int32(&[1, 0]),
            int32(&[1, 1]),
        ]
        .to_vec();
        inputs.push(column(DataType::Bytes, ids, 2));
        inputs.push(int32(&[10, 99]));
        let e = accumulator.execute(&inputs).unwrap_err();
        assert!(
            e.to_string().contains("CORRID 'x' is not an integer"),
            "{e}"
        );
        let mut ids = Vec::new();
        for id in [&b"1002"[..], b"7"] {
            crate::tensors::push_bytes_element(&mut ids, id).unwrap();
        }
        inputs[4] = column(DataType::Bytes, ids, 2);
        let out = accumulator.execute(&inputs).unwrap();
        assert_eq!(out, vec![int32(&[1017, 7]), int32(&[15, 7])]);
    }
}
