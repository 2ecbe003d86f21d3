//! Checks of one field's value, each failing with a 400 that names the
//! field (`param`) in the words OpenAI's own server uses.

use crate::cmd::serve::errors::ApiError;

pub fn unrecognized(field: &str) -> ApiError {
    ApiError::invalid_param(
        field,
        format!("Unrecognized request argument supplied: {field}"),
    )
}

pub fn unsupported(field: &str, what: &str) -> ApiError {
    ApiError::invalid_param(field, format!("{what} is not supported by this server."))
}

/// `v` in `lo..=hi` (`hi` = `i64::MAX`: no upper bound).
pub fn int_in(field: &str, v: i64, lo: i64, hi: i64) -> Result<usize, ApiError> {
    if v < lo || v > hi {
        let range = if hi == i64::MAX {
            format!("at least {lo}")
        } else {
            format!("between {lo} and {hi}")
        };
        return Err(ApiError::invalid_param(
            field,
            format!("`{field}` must be {range}, got {v}."),
        ));
    }
    Ok(v as usize)
}

/// `v` (else `default`) as the engine's f32 where `ok` holds; `rule` says
/// what `ok` asks for, in the message.
pub fn float_where(
    field: &str,
    v: Option<f64>,
    default: f64,
    ok: impl Fn(f64) -> bool,
    rule: &str,
) -> Result<f32, ApiError> {
    let x = v.unwrap_or(default);
    // The engine works in f32: a value beyond its range is out of range here.
    if !(x as f32).is_finite() || !ok(x) {
        return Err(ApiError::invalid_param(
            field,
            format!("`{field}` must be {rule}, got {x}."),
        ));
    }
    Ok(x as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(r: Result<impl std::fmt::Debug, ApiError>) -> (String, String) {
        let e = r.unwrap_err();
        (e.param.unwrap_or_default(), e.message)
    }

    #[test]
    fn ranges_are_spelt_out() {
        assert_eq!(int_in("n", 3, 1, 16).unwrap(), 3);
        assert_eq!(
            message(int_in("n", 17, 1, 16)),
            ("n".into(), "`n` must be between 1 and 16, got 17.".into())
        );
        assert_eq!(
            message(int_in("max_tokens", 0, 1, i64::MAX)),
            (
                "max_tokens".into(),
                "`max_tokens` must be at least 1, got 0.".into()
            )
        );
    }

    #[test]
    fn floats_beyond_f32_are_out_of_range() {
        let positive = |x: f64| x > 0.0;
        assert_eq!(
            float_where("top_p", None, 1.0, positive, "in (0, 1]").unwrap(),
            1.0
        );
        assert!(float_where("t", Some(1e300), 1.0, positive, "positive").is_err());
        assert_eq!(
            message(float_where("t", Some(-1.5), 1.0, positive, "positive")),
            ("t".into(), "`t` must be positive, got -1.5.".into())
        );
    }
}
