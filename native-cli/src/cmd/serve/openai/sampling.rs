//! How tokens are chosen: the sampling parameters, with OpenAI's defaults
//! (temperature 1) and vLLM's extras, and Hearth's `draft` (speculative
//! decoding).

use hearth::engine::{Drafting, SamplingParams};

use super::checks::{float_where, int_in};
use super::request::RequestBody;
use crate::cmd::serve::errors::ApiError;

pub fn params(body: &RequestBody) -> Result<SamplingParams, ApiError> {
    let top_k = top_k(body.top_k)?;
    let seed = seed(body.seed)?;
    Ok(SamplingParams {
        temperature: float_where(
            "temperature",
            body.temperature,
            1.0,
            |x| x >= 0.0,
            "at least 0",
        )?,
        top_k,
        top_p: float_where(
            "top_p",
            body.top_p,
            1.0,
            |x| x > 0.0 && x <= 1.0,
            "in (0, 1]",
        )?,
        min_p: float_where(
            "min_p",
            body.min_p,
            0.0,
            |x| (0.0..=1.0).contains(&x),
            "in [0, 1]",
        )?,
        repetition_penalty: float_where(
            "repetition_penalty",
            body.repetition_penalty,
            1.0,
            |x| x > 0.0,
            "greater than 0",
        )?,
        presence_penalty: float_where(
            "presence_penalty",
            body.presence_penalty,
            0.0,
            |x| (-2.0..=2.0).contains(&x),
            "between -2 and 2",
        )?,
        frequency_penalty: float_where(
            "frequency_penalty",
            body.frequency_penalty,
            0.0,
            |x| (-2.0..=2.0).contains(&x),
            "between -2 and 2",
        )?,
        seed,
    })
}

/// vLLM's `top_k`: -1 and 0 both mean off.
fn top_k(k: Option<i64>) -> Result<usize, ApiError> {
    match k {
        None | Some(-1) | Some(0) => Ok(0),
        Some(k) => int_in("top_k", k, 1, i64::MAX).map_err(|_| {
            ApiError::invalid_param(
                "top_k",
                format!("`top_k` must be -1 (off) or at least 1, got {k}."),
            )
        }),
    }
}

/// Any 64-bit seed, signed or not: a negative one keeps its bits.
fn seed(s: Option<i128>) -> Result<Option<u64>, ApiError> {
    match s {
        None => Ok(None),
        Some(s) if (0..=u64::MAX as i128).contains(&s) => Ok(Some(s as u64)),
        Some(s) if (i64::MIN as i128..0).contains(&s) => Ok(Some(s as i64 as u64)),
        Some(s) => Err(ApiError::invalid_param(
            "seed",
            format!("`seed` {s} does not fit in 64 bits."),
        )),
    }
}

/// `draft`; `None` leaves the server's default.
pub fn draft(d: Option<&str>) -> Result<Option<Drafting>, ApiError> {
    d.map(|o| {
        Drafting::parse(o).ok_or_else(|| {
            ApiError::invalid_param(
                "draft",
                format!("`draft` must be \"ngram\", \"model\" or \"off\", got {o:?}."),
            )
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_off_either_way() {
        assert_eq!(top_k(None).unwrap(), 0);
        assert_eq!(top_k(Some(-1)).unwrap(), 0);
        assert_eq!(top_k(Some(0)).unwrap(), 0);
        assert_eq!(top_k(Some(40)).unwrap(), 40);
        assert_eq!(
            top_k(Some(-2)).unwrap_err().message,
            "`top_k` must be -1 (off) or at least 1, got -2."
        );
    }

    #[test]
    fn seeds_fill_64_bits_signed_or_not() {
        assert_eq!(seed(Some(u64::MAX as i128)).unwrap(), Some(u64::MAX));
        assert_eq!(seed(Some(-1)).unwrap(), Some(u64::MAX));
        assert_eq!(seed(Some(i64::MIN as i128)).unwrap(), Some(1 << 63));
        let e = seed(Some(1 << 64)).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("seed"));
        assert_eq!(
            e.message,
            "`seed` 18446744073709551616 does not fit in 64 bits."
        );
        assert!(seed(Some(i64::MIN as i128 - 1)).is_err());
    }

    #[test]
    fn openai_defaults_and_ranges() {
        let p = params(&RequestBody::default()).unwrap();
        assert_eq!((p.temperature, p.top_p, p.min_p), (1.0, 1.0, 0.0));
        let body = RequestBody {
            presence_penalty: Some(2.5),
            ..Default::default()
        };
        assert_eq!(
            params(&body).unwrap_err().message,
            "`presence_penalty` must be between -2 and 2, got 2.5."
        );
    }

    #[test]
    fn draft_names() {
        assert_eq!(draft(None).unwrap(), None);
        assert_eq!(draft(Some("ngram")).unwrap(), Some(Drafting::Ngram));
        assert_eq!(
            draft(Some("eagle")).unwrap_err().message,
            "`draft` must be \"ngram\", \"model\" or \"off\", got \"eagle\"."
        );
    }
}
