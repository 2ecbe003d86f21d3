//! llama.cpp's split GGUF (`llama-gguf-split --split`): one model in files
//! `NAME-00001-of-0000N.gguf` ... `NAME-0000N-of-0000N.gguf`, each a whole
//! GGUF holding some of the tensors (their data in its own data section);
//! the first also holds the model's metadata. Every shard says where it
//! sits (`split.no`, 0-based, and `split.count`) and how many tensors the
//! set holds (`split.tensors.count`). [`GgufFile::join`] checks a set and
//! makes it one [`GgufFile`] to the rest of the runtime.

use std::collections::HashMap;

use super::GgufFile;
use crate::{HearthError, Result};

pub const SPLIT_NO: &str = "split.no";
pub const SPLIT_COUNT: &str = "split.count";
pub const SPLIT_TENSORS_COUNT: &str = "split.tensors.count";

/// `split.count` is a u16 in llama.cpp (and shard names have five digits).
const MAX_SHARDS: u64 = u16::MAX as u64;

/// Where one file sits in a split model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitInfo {
    /// 0-based (`split.no`); file names count from 1.
    pub no: usize,
    pub count: usize,
}

impl SplitInfo {
    /// The ending llama.cpp gives this shard's file name, `-00002-of-00003.gguf`.
    pub fn file_suffix(&self) -> String {
        shard_suffix(self.no, self.count)
    }
}

fn shard_suffix(no: usize, count: usize) -> String {
    format!("-{:05}-of-{count:05}.gguf", no + 1)
}

fn invalid(m: String) -> HearthError {
    HearthError::InvalidFile(m)
}

/// `e` with the shard it came from in its message (I/O errors name their
/// path already).
fn in_shard(name: &str, e: HearthError) -> HearthError {
    match e {
        HearthError::InvalidFile(m) => HearthError::InvalidFile(format!("{name}: {m}")),
        HearthError::Unsupported(m) => HearthError::Unsupported(format!("{name}: {m}")),
        e => e,
    }
}

impl GgufFile {
    /// Where this file sits in a split model: `None` for a model in one
    /// file (no `split.count`, or 0 or 1, as `gguf-split --merge` leaves it).
    /// A file [`GgufFile::join`]ed from shards answers for its first.
    pub fn split(&self) -> Result<Option<SplitInfo>> {
        let count = self.get_u64(SPLIT_COUNT)?.unwrap_or(0);
        if count <= 1 {
            return Ok(None);
        }
        if count > MAX_SHARDS {
            return Err(invalid(format!(
                "{SPLIT_COUNT} = {count} is more than {MAX_SHARDS} files"
            )));
        }
        let no = self.get_u64(SPLIT_NO)?.ok_or_else(|| {
            invalid(format!(
                "{SPLIT_COUNT} = {count} but `{SPLIT_NO}` (which shard this is) is missing"
            ))
        })?;
        if no >= count {
            return Err(invalid(format!(
                "{SPLIT_NO} = {no} is not below {SPLIT_COUNT} = {count}"
            )));
        }
        Ok(Some(SplitInfo {
            no: no as usize,
            count: count as usize,
        }))
    }

    /// The error for a shard of a split model read on its own.
    pub(crate) fn check_not_lone_shard(&self) -> Result<()> {
        match self.split()? {
            Some(s) if self.file_count() != s.count => Err(invalid(format!(
                "this file is shard {} of {} of a split GGUF: load all {} shards together \
                 (by the path of any one, with the others next to it under their \
                 `*{}` ... names; or all of them picked at once in a browser)",
                s.no + 1,
                s.count,
                s.count,
                shard_suffix(0, s.count),
            ))),
            _ => Ok(()),
        }
    }

    /// Joins the shards of a split model, given as (name for errors, parsed
    /// file) in any order, into one model: the metadata of shard `split.no`
    /// 0 and the tensors of all. Every shard must agree on `split.count`,
    /// each `split.no` must be there once, tensor names must be unique across
    /// the set and their number must be the `split.tensors.count` of the first.
    pub fn join(shards: Vec<(String, GgufFile)>) -> Result<GgufFile> {
        let Some((first_name, first)) = shards.first() else {
            return Err(invalid("split GGUF: no shard given".into()));
        };
        let count = first
            .split()
            .map_err(|e| in_shard(first_name, e))?
            .ok_or_else(|| {
                invalid(format!(
                    "{first_name} is not a shard of a split GGUF (its `{SPLIT_COUNT}` is not above 1)"
                ))
            })?
            .count;
        let first_name = first_name.clone();
        let mut slots: Vec<Option<(String, GgufFile)>> = Vec::new();
        slots.resize_with(count, || None);
        for (name, file) in shards {
            let s = file.split().map_err(|e| in_shard(&name, e))?;
            let s = match s {
                Some(s) if s.count == count => s,
                _ => {
                    let found = file.get_u64(SPLIT_COUNT).ok().flatten().unwrap_or(0);
                    return Err(invalid(format!(
                        "split GGUF: {name} says {SPLIT_COUNT} = {found}, but {first_name} says {count}"
                    )));
                }
            };
            if file.file_count() != 1 {
                return Err(invalid(format!(
                    "split GGUF: {name} is already joined from {} files",
                    file.file_count()
                )));
            }
            if let Some((other, _)) = &slots[s.no] {
                return Err(invalid(format!(
                    "split GGUF: {other} and {name} are both shard {} of {count} ({SPLIT_NO} = {})",
                    s.no + 1,
                    s.no
                )));
            }
            slots[s.no] = Some((name, file));
        }
        let mut shards = Vec::with_capacity(count);
        for (i, slot) in slots.into_iter().enumerate() {
            shards.push(slot.ok_or_else(|| {
                invalid(format!(
                    "split GGUF: shard {} of {count} (`*{}`) is missing",
                    i + 1,
                    shard_suffix(i, count)
                ))
            })?);
        }
        merge(shards)
    }
}

/// Shards in `split.no` order, each checked on its own, into one file.
fn merge(shards: Vec<(String, GgufFile)>) -> Result<GgufFile> {
    let count = shards.len();
    let Some((first_name, first)) = shards.first() else {
        return Err(invalid("split GGUF: no shard given".into()));
    };
    let want = first
        .get_u64(SPLIT_TENSORS_COUNT)
        .map_err(|e| in_shard(first_name, e))?
        .ok_or_else(|| {
            invalid(format!(
                "split GGUF: {first_name} (shard 1 of {count}) has no `{SPLIT_TENSORS_COUNT}`"
            ))
        })?;
    for (name, file) in &shards[1..] {
        match file
            .get_u64(SPLIT_TENSORS_COUNT)
            .map_err(|e| in_shard(name, e))?
        {
            Some(n) if n != want => {
                return Err(invalid(format!(
                "split GGUF: {name} says {SPLIT_TENSORS_COUNT} = {n}, but {first_name} says {want}"
            )))
            }
            _ => {}
        }
    }
    let first_name = first_name.clone();
    let found: usize = shards.iter().map(|(_, f)| f.tensors.len()).sum();
    let mut shards = shards.into_iter();
    let Some((name0, mut joined)) = shards.next() else {
        return Err(invalid("split GGUF: no shard given".into()));
    };
    // The first shard's header is the model's; the tensors are gathered anew.
    let tensors0 = std::mem::replace(&mut joined.tensors, Vec::with_capacity(found));
    let parts0 = std::mem::replace(&mut joined.parts, Vec::with_capacity(count));
    joined.tensor_index = HashMap::with_capacity(found);
    let rest = shards.map(|(n, f)| (n, f.tensors, f.parts));
    let mut names: Vec<String> = Vec::with_capacity(count);
    for (shard, (name, tensors, parts)) in std::iter::once((name0, tensors0, parts0))
        .chain(rest)
        .enumerate()
    {
        for mut t in tensors {
            // The parser refused a name twice in one file: `prev` is in an earlier shard.
            if let Some(&prev) = joined.tensor_index.get(&t.name) {
                return Err(invalid(format!(
                    "split GGUF: tensor `{}` is in both {} and {name}",
                    t.name, names[joined.tensors[prev].shard]
                )));
            }
            t.shard = shard;
            joined
                .tensor_index
                .insert(t.name.clone(), joined.tensors.len());
            joined.tensors.push(t);
        }
        joined.parts.extend(parts);
        names.push(name);
    }
    if found as u64 != want {
        return Err(invalid(format!(
            "split GGUF: {first_name} says {SPLIT_TENSORS_COUNT} = {want}, but the {count} shards hold {found} tensors"
        )));
    }
    Ok(joined)
}

#[cfg(not(target_arch = "wasm32"))]
impl GgufFile {
    /// `file`, parsed from `path`, as the whole model: itself when it is not
    /// a shard, else joined with its siblings, found in the same folder by
    /// llama.cpp's naming (`NAME-0000K-of-0000N.gguf`) and parsed the same
    /// way (`need_data`: see [`GgufFile::parse_header_only`]).
    pub(crate) fn open_split(
        path: &std::path::Path,
        file: GgufFile,
        need_data: bool,
    ) -> Result<GgufFile> {
        let shown = path.display().to_string();
        let Some(s) = file.split().map_err(|e| in_shard(&shown, e))? else {
            return Ok(file);
        };
        let suffix = s.file_suffix();
        let prefix = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(&suffix))
            .ok_or_else(|| {
                invalid(format!(
                    "{shown} is shard {} of {} of a split GGUF, but its name does not end in \
                     `{suffix}`, so its sibling files cannot be found (keep the names \
                     llama-gguf-split gave them)",
                    s.no + 1,
                    s.count
                ))
            })?;
        let dir = path.parent().unwrap_or(std::path::Path::new(""));
        let mut shards = Vec::with_capacity(s.count);
        for i in (0..s.count).filter(|&i| i != s.no) {
            let p = dir.join(format!("{prefix}{}", shard_suffix(i, s.count)));
            let name = p.display().to_string();
            if !p.is_file() {
                return Err(invalid(format!(
                    "split GGUF: shard {} of {} is missing: {name} is not a file",
                    i + 1,
                    s.count
                )));
            }
            let bytes = super::FileBytes::map(&p)?;
            let sibling = GgufFile::parse_with(bytes, need_data).map_err(|e| in_shard(&name, e))?;
            if let Ok(Some(t)) = sibling.split() {
                if t.count == s.count && t.no != i {
                    return Err(invalid(format!(
                        "split GGUF: {name} is named shard {} of {}, but its {SPLIT_NO} = {} says shard {}",
                        i + 1,
                        s.count,
                        t.no,
                        t.no + 1
                    )));
                }
            }
            shards.push((name, sibling));
        }
        shards.insert(s.no, (shown, file));
        GgufFile::join(shards)
    }
}
