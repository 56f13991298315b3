//! WAL segments with Prometheus TSDB's page/record framing
//! (`tsdb/wlog`): a segment is a file of 32 KiB pages; a record is split
//! into fragments that never cross a page, each with a 7-byte header
//! `type u8 | length u16 BE | CRC-32C u32 BE` (type 1 full, 2 first,
//! 3 middle, 4 last; 0 = zero padding to the end of the page). Records never
//! span segments. A torn or garbled tail is detected by the CRC/length
//! checks and reported with the offset of the first record that is not
//! intact, so [`repair`] can truncate there.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub(crate) const PAGE_SIZE: usize = 32 * 1024;
pub(crate) const DEFAULT_SEGMENT_SIZE: usize = 32 * 1024 * 1024;
const HEADER_SIZE: usize = 7;

const REC_PAGE_TERM: u8 = 0;
const REC_FULL: u8 = 1;
const REC_FIRST: u8 = 2;
const REC_MIDDLE: u8 = 3;
const REC_LAST: u8 = 4;

/// `00000042`: segment file name, as Prometheus names them.
pub(crate) fn segment_name(index: u64) -> String {
    format!("{index:08}")
}

/// Segment indexes present in `dir`, ascending (other files are ignored).
pub(crate) fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.len() == 8 && name.bytes().all(|b| b.is_ascii_digit()) && entry.file_type()?.is_file() {
            out.push(name.parse().expect("eight digits"));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Appends records to the newest segment of a directory.
pub(crate) struct SegmentWriter {
    dir: PathBuf,
    file: File,
    index: u64,
    segment_size: usize,
    page: Box<[u8]>,
    /// Bytes of the page filled with fragments.
    alloc: usize,
    /// Bytes of the page already written to the file.
    flushed: usize,
    /// Completed pages in the current segment.
    done_pages: usize,
    /// Bytes handed to the OS since creation (for metrics).
    pub(crate) bytes_written: u64,
}

impl SegmentWriter {
    /// Starts a new segment `index` in `dir` (never appends to an existing
    /// file: after a restart, writing resumes in a fresh segment, so a
    /// possibly torn tail of the old one is never extended).
    pub(crate) fn create(dir: &Path, index: u64, segment_size: usize) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(dir.join(segment_name(index)))?;
        sync_dir(dir);
        Ok(SegmentWriter {
            dir: dir.to_path_buf(),
            file,
            index,
            segment_size: segment_size.max(2 * PAGE_SIZE),
            page: vec![0u8; PAGE_SIZE].into_boxed_slice(),
            alloc: 0,
            flushed: 0,
            done_pages: 0,
            bytes_written: 0,
        })
    }

    pub(crate) fn index(&self) -> u64 {
        self.index
    }

    /// A second handle on the current segment file, for fsync outside the lock.
    pub(crate) fn file_handle(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// Writes `records` and hands every byte to the OS before returning (one
    /// `write` per page touched). Returns the previous segment's file when a
    /// segment was completed, so the caller can fsync it.
    pub(crate) fn log(&mut self, records: &[&[u8]]) -> io::Result<Option<File>> {
        let mut finished = None;
        for rec in records {
            if let Some(f) = self.log_one(rec)? {
                finished = Some(f);
            }
        }
        self.flush_page(false)?;
        Ok(finished)
    }

    fn pages_per_segment(&self) -> usize {
        self.segment_size / PAGE_SIZE
    }

    fn log_one(&mut self, rec: &[u8]) -> io::Result<Option<File>> {
        let mut finished = None;
        if PAGE_SIZE - self.alloc < HEADER_SIZE {
            self.flush_page(true)?;
        }
        // Room left in this segment, counting a header per page.
        let pages_left = self.pages_per_segment().saturating_sub(self.done_pages + 1);
        let left = (PAGE_SIZE - self.alloc - HEADER_SIZE) + (PAGE_SIZE - HEADER_SIZE) * pages_left;
        let segment_empty = self.done_pages == 0 && self.alloc == 0;
        // A record larger than a whole segment goes into one oversized segment.
        if rec.len() > left && !segment_empty {
            finished = Some(self.next_segment()?);
        }
        let mut rest = rec;
        let mut first = true;
        loop {
            let room = PAGE_SIZE - self.alloc - HEADER_SIZE;
            let n = rest.len().min(room);
            let last = n == rest.len();
            let typ = match (first, last) {
                (true, true) => REC_FULL,
                (true, false) => REC_FIRST,
                (false, true) => REC_LAST,
                (false, false) => REC_MIDDLE,
            };
            let part = &rest[..n];
            let h = &mut self.page[self.alloc..self.alloc + HEADER_SIZE];
            h[0] = typ;
            h[1..3].copy_from_slice(&(n as u16).to_be_bytes());
            h[3..7].copy_from_slice(&crc32c::crc32c(part).to_be_bytes());
            self.alloc += HEADER_SIZE;
            self.page[self.alloc..self.alloc + n].copy_from_slice(part);
            self.alloc += n;
            rest = &rest[n..];
            if PAGE_SIZE - self.alloc < HEADER_SIZE {
                self.flush_page(true)?;
            }
            first = false;
            if last {
                break;
            }
        }
        Ok(finished)
    }

    /// Writes the unwritten part of the page; with `clear`, pads the page
    /// with zeros to its end and starts a new one.
    fn flush_page(&mut self, clear: bool) -> io::Result<()> {
        if clear {
            self.alloc = PAGE_SIZE;
        }
        if self.alloc > self.flushed {
            self.file.write_all(&self.page[self.flushed..self.alloc])?;
            self.bytes_written += (self.alloc - self.flushed) as u64;
            self.flushed = self.alloc;
        }
        if clear {
            self.page.fill(0);
            self.alloc = 0;
            self.flushed = 0;
            self.done_pages += 1;
        }
        Ok(())
    }

    /// Pads and closes the current segment and opens the next one; returns
    /// the finished segment's file.
    pub(crate) fn next_segment(&mut self) -> io::Result<File> {
        if self.alloc > 0 {
            self.flush_page(true)?;
        }
        let next = SegmentWriter::create(&self.dir, self.index + 1, self.segment_size)?;
        let bytes = self.bytes_written;
        let old = std::mem::replace(self, next);
        self.bytes_written = bytes;
        Ok(old.file)
    }

    pub(crate) fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// fsyncs a directory so a created or renamed entry survives a machine
/// crash; best effort (not every filesystem supports it).
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Where and why reading a segment stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Corruption {
    pub(crate) segment: u64,
    /// Offset of the first byte not part of an intact record.
    pub(crate) offset: u64,
    pub(crate) reason: String,
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "segment {} offset {}: {}",
            segment_name(self.segment),
            self.offset,
            self.reason
        )
    }
}

/// Calls `f` with every intact record of segment `index` in `dir`, in order.
/// Returns the corruption that ended the read early, if any.
pub(crate) fn read_segment(dir: &Path, index: u64, f: impl FnMut(&[u8])) -> io::Result<Option<Corruption>> {
    let data = fs::read(dir.join(segment_name(index)))?;
    Ok(read_segment_bytes(index, &data, f))
}

/// [`read_segment`] over the bytes of segment `index` already in memory.
pub(crate) fn read_segment_bytes(index: u64, data: &[u8], mut f: impl FnMut(&[u8])) -> Option<Corruption> {
    let corrupt = |offset: usize, reason: &str| Corruption {
        segment: index,
        offset: offset as u64,
        reason: reason.to_string(),
    };
    let mut pos = 0usize;
    let mut record: Vec<u8> = Vec::new();
    // Offset where the record being reassembled started.
    let mut record_start: Option<usize> = None;
    while pos < data.len() {
        let in_page = PAGE_SIZE - pos % PAGE_SIZE;
        if in_page < HEADER_SIZE {
            pos += in_page;
            continue;
        }
        let typ = data[pos];
        if typ == REC_PAGE_TERM {
            // The rest of the page must be zeros.
            let end = (pos + in_page).min(data.len());
            if data[pos..end].iter().any(|&b| b != 0) {
                return Some(corrupt(record_start.unwrap_or(pos), "non-zero bytes in page padding"));
            }
            pos = end;
            continue;
        }
        if pos + HEADER_SIZE > data.len() {
            return Some(corrupt(record_start.unwrap_or(pos), "torn record header"));
        }
        let len = u16::from_be_bytes([data[pos + 1], data[pos + 2]]) as usize;
        let crc = u32::from_be_bytes([data[pos + 3], data[pos + 4], data[pos + 5], data[pos + 6]]);
        let start = pos + HEADER_SIZE;
        if len > in_page - HEADER_SIZE {
            return Some(corrupt(record_start.unwrap_or(pos), "fragment crosses a page"));
        }
        if start + len > data.len() {
            return Some(corrupt(record_start.unwrap_or(pos), "torn record"));
        }
        let part = &data[start..start + len];
        if crc32c::crc32c(part) != crc {
            return Some(corrupt(record_start.unwrap_or(pos), "checksum mismatch"));
        }
        match (typ, record_start.is_some()) {
            (REC_FULL, false) => f(part),
            (REC_FIRST, false) => {
                record.clear();
                record.extend_from_slice(part);
                record_start = Some(pos);
            }
            (REC_MIDDLE, true) => record.extend_from_slice(part),
            (REC_LAST, true) => {
                record.extend_from_slice(part);
                f(&record);
                record_start = None;
            }
            (REC_FULL | REC_FIRST | REC_MIDDLE | REC_LAST, _) => {
                return Some(corrupt(record_start.unwrap_or(pos), "fragment out of sequence"));
            }
            _ => return Some(corrupt(record_start.unwrap_or(pos), "unknown record type")),
        }
        pos = start + len;
    }
    if let Some(start) = record_start {
        return Some(corrupt(start, "record cut off at the end of the segment"));
    }
    None
}

/// Cuts segment `c.segment` at the corruption and deletes every later
/// segment (their records would follow a gap).
pub(crate) fn repair(dir: &Path, c: &Corruption) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(dir.join(segment_name(c.segment)))?;
    file.set_len(c.offset)?;
    file.sync_all()?;
    for later in list_segments(dir)?.into_iter().filter(|&i| i > c.segment) {
        fs::remove_file(dir.join(segment_name(later)))?;
    }
    sync_dir(dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(dir: &Path, index: u64) -> (Vec<Vec<u8>>, Option<Corruption>) {
        let mut out = Vec::new();
        let c = read_segment(dir, index, |r| out.push(r.to_vec())).unwrap();
        (out, c)
    }

    fn rec(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
    }

    #[test]
    fn records_of_every_size_round_trip_across_pages() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SegmentWriter::create(dir.path(), 0, DEFAULT_SEGMENT_SIZE).unwrap();
        // Small, page-sized and multi-page records, with boundaries landing
        // everywhere (including less than a header's room left in a page).
        let sizes = [1, 100, PAGE_SIZE - 7, PAGE_SIZE, 3 * PAGE_SIZE + 5, 0, 32_000, 761, 5];
        let want: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| rec(i, n)).collect();
        for r in &want {
            w.log(&[r]).unwrap();
        }
        let (got, c) = records(dir.path(), 0);
        assert_eq!(c, None);
        assert_eq!(got, want);
    }

    #[test]
    fn a_full_segment_rolls_over_and_records_never_span_segments() {
        let dir = tempfile::tempdir().unwrap();
        let seg = 2 * PAGE_SIZE;
        let mut w = SegmentWriter::create(dir.path(), 3, seg).unwrap();
        let want: Vec<Vec<u8>> = (0..10).map(|i| rec(i, 20_000)).collect();
        for r in &want {
            w.log(&[r]).unwrap();
        }
        let segs = list_segments(dir.path()).unwrap();
        assert!(segs.len() >= 4, "{segs:?}");
        assert_eq!(segs[0], 3);
        let mut got = Vec::new();
        for s in segs {
            let (r, c) = records(dir.path(), s);
            assert_eq!(c, None);
            assert!(fs::metadata(dir.path().join(segment_name(s))).unwrap().len() <= seg as u64);
            got.extend(r);
        }
        assert_eq!(got, want);
    }

    #[test]
    fn torn_tail_is_detected_and_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SegmentWriter::create(dir.path(), 0, DEFAULT_SEGMENT_SIZE).unwrap();
        let want: Vec<Vec<u8>> = (0..5).map(|i| rec(i, 10_000)).collect();
        for r in &want {
            w.log(&[r]).unwrap();
        }
        drop(w);
        let path = dir.path().join(segment_name(0));
        let len = fs::metadata(&path).unwrap().len();
        // Tear the last record in the middle.
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 3000)
            .unwrap();
        let (got, c) = records(dir.path(), 0);
        let c = c.expect("corruption detected");
        assert_eq!(got, want[..4].to_vec());
        repair(dir.path(), &c).unwrap();
        let (got, c) = records(dir.path(), 0);
        assert_eq!(c, None);
        assert_eq!(got, want[..4].to_vec());
    }

    #[test]
    fn garbled_bytes_fail_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SegmentWriter::create(dir.path(), 0, DEFAULT_SEGMENT_SIZE).unwrap();
        for i in 0..3 {
            w.log(&[&rec(i, 50)]).unwrap();
        }
        w.next_segment().unwrap();
        w.log(&[&rec(9, 50)]).unwrap();
        drop(w);
        let path = dir.path().join(segment_name(0));
        let mut data = fs::read(&path).unwrap();
        let third = 2 * (HEADER_SIZE + 50);
        data[third + HEADER_SIZE + 3] ^= 0x55;
        fs::write(&path, &data).unwrap();
        let (got, c) = records(dir.path(), 0);
        let c = c.unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(c.offset, third as u64);
        repair(dir.path(), &c).unwrap();
        assert_eq!(list_segments(dir.path()).unwrap(), vec![0], "later segments deleted");
        assert_eq!(records(dir.path(), 0), (vec![rec(0, 50), rec(1, 50)], None));
    }
}
