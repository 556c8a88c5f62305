//! A few rows of a posts data file read straight from the pages that hold them, for the
//! statements that the text indexes narrow to a few candidates: DuckDB decodes, for each row it
//! reads by `file_row_number`, the whole row group of each column (16 Ki rows), where the
//! Parquet reader decodes one page of 2 Ki rows ([`crate::writer::PAGE_ROWS`]) by the file's
//! offset index. The rows go into a temporary table of the statement's connection
//! ([`load_candidate_rows`]), which the statement reads in place of those files.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Date32Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
};
use parquet::file::metadata::PageIndexPolicy;

use super::*;

/// The most candidates of one file read from their pages; a file with more is read by DuckDB.
/// Measured on a month-tier file of 500,000 posts, every column of 20 scattered rows took 18 ms
/// from pages of 2,048 rows against 171 ms through DuckDB (54 ms for the four columns a page of
/// posts shows, which DuckDB alone reads); of 1,000 rows, 155 ms from pages of 1,024 against
/// DuckDB's 97 to 117 ms for those four. The crossover lies between; 256 is below it.
pub(super) const MAX_ROWS_FROM_PAGES: usize = 256;

/// The temporary table that holds the rows read from their pages, in a statement's connection.
pub(super) const CANDIDATE_ROWS: &str = "candidate_rows";

/// The footers (with their offset indexes) of the data files read from, by path, with the
/// inode each was read from: a file replaced under its name is read again.
#[derive(Default)]
pub(super) struct Footers(Mutex<HashMap<PathBuf, (u64, ArrowReaderMetadata)>>);

impl Footers {
    /// Forgets the files `listed` does not hold.
    pub(super) fn keep(&self, listed: &std::collections::HashSet<&PathBuf>) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).retain(|path, _| listed.contains(path));
    }

    fn of(&self, path: &Path, file: &File) -> Result<ArrowReaderMetadata> {
        use std::os::unix::fs::MetadataExt;
        let inode = file.metadata().map_err(Error::io("stat", path))?.ino();
        if let Some((known, metadata)) = self.0.lock().unwrap_or_else(|p| p.into_inner()).get(path)
            && *known == inode
        {
            return Ok(metadata.clone());
        }
        let options = ArrowReaderOptions::new()
            .with_column_index_policy(PageIndexPolicy::Skip)
            .with_offset_index_policy(PageIndexPolicy::Optional);
        let metadata = ArrowReaderMetadata::load(file, options).map_err(read_error(path))?;
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(path.to_path_buf(), (inode, metadata.clone()));
        Ok(metadata)
    }
}

fn read_error(path: &Path) -> impl FnOnce(parquet::errors::ParquetError) -> Error {
    let path = path.to_path_buf();
    move |source| Error::ParquetRead { path, source }
}

/// The columns of the candidate table: a posts file's, strings plain, then the partition date.
fn candidate_schema() -> Arc<Schema> {
    static SCHEMA: std::sync::LazyLock<Arc<Schema>> = std::sync::LazyLock::new(|| {
        let mut fields: Vec<Field> =
            crate::model::posts_schema().fields().iter().map(|field| plain_field(field.as_ref())).collect();
        fields.push(Field::new("date", DataType::Date32, false));
        Arc::new(Schema::new(fields))
    });
    SCHEMA.clone()
}

fn plain_field(field: &Field) -> Field {
    match field.data_type() {
        DataType::Dictionary(_, value) => field.clone().with_data_type(value.as_ref().clone()),
        _ => field.clone(),
    }
}

/// `batch` with its dictionary columns cast to their plain values, as DuckDB's appender takes
/// them into a table's columns.
pub(super) fn plain_strings(batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = batch.schema();
    let columns = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, column)| match field.data_type() {
            DataType::Dictionary(_, value) => arrow::compute::cast(column, value),
            _ => Ok(column.clone()),
        })
        .collect::<std::result::Result<Vec<ArrayRef>, _>>()?;
    let fields: Vec<Field> = schema.fields().iter().map(|field| plain_field(field.as_ref())).collect();
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}

/// Which rows of each row group `rows` (sorted) selects, and those groups.
fn selection(row_group_rows: impl Iterator<Item = u64>, rows: &[u64]) -> (Vec<usize>, Vec<RowSelector>) {
    let (mut groups, mut selectors) = (Vec::new(), Vec::new());
    let (mut start, mut next) = (0_u64, 0_usize);
    for (group, n) in row_group_rows.enumerate() {
        let end = start + n;
        let mut at = start;
        while let Some(&row) = rows.get(next)
            && row < end
        {
            if groups.last() != Some(&group) {
                groups.push(group);
            }
            if row > at {
                selectors.push(RowSelector::skip((row - at) as usize));
            }
            selectors.push(RowSelector::select(1));
            at = row + 1;
            next += 1;
        }
        if groups.last() == Some(&group) && end > at {
            selectors.push(RowSelector::skip((end - at) as usize));
        }
        start = end;
    }
    (groups, selectors)
}

impl Engine {
    /// Makes DuckDB read every candidate row, as it does a file's many.
    #[cfg(test)]
    pub(crate) fn read_no_rows_from_pages(&self) {
        self.max_rows_from_pages.store(0, std::sync::atomic::Ordering::Relaxed);
    }

    /// The rows `rows` (sorted, distinct, each in the file) of the posts data file `path`, as
    /// the candidate table holds them; `None` when the file's columns are not today's (a file
    /// written before `uri` stopped being stored), which DuckDB reads instead.
    pub(super) fn rows_from_pages(&self, path: &Path, rows: &[u64]) -> Result<Option<RecordBatch>> {
        let file = File::open(path).map_err(Error::io("open", path))?;
        let metadata = self.footers.of(path, &file)?;
        let stored: Vec<Field> = metadata.schema().fields().iter().map(|field| plain_field(field.as_ref())).collect();
        let schema = candidate_schema();
        if stored.len() + 1 != schema.fields().len()
            || stored
                .iter()
                .zip(schema.fields())
                .any(|(stored, wanted)| stored.name() != wanted.name() || stored.data_type() != wanted.data_type())
        {
            return Ok(None);
        }
        let Some(day) = rollups::partition_day(path) else { return Ok(None) };
        let groups = metadata.metadata().row_groups().iter().map(|group| group.num_rows() as u64);
        let (groups, selectors) = selection(groups, rows);
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata)
            .with_row_groups(groups)
            .with_row_selection(RowSelection::from(selectors))
            .with_batch_size(rows.len().max(1))
            .build()
            .map_err(read_error(path))?;
        let mut batches = Vec::new();
        for batch in reader {
            batches.push(plain_strings(
                &batch.map_err(|error| Error::ParquetRead { path: path.to_path_buf(), source: error.into() })?,
            )?);
        }
        let stored_schema = Arc::new(Schema::new(stored));
        let read = arrow::compute::concat_batches(&stored_schema, &batches)?;
        if read.num_rows() != rows.len() {
            return Err(Error::Corrupt(format!(
                "{} gave {} of the {} rows asked for",
                path.display(),
                read.num_rows(),
                rows.len()
            )));
        }
        let days = (day - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("a date")).num_days() as i32;
        let mut columns = read.columns().to_vec();
        columns.push(Arc::new(Date32Array::from(vec![days; read.num_rows()])));
        Ok(Some(RecordBatch::try_new(schema, columns)?))
    }
}

/// Puts `batches` (of the candidate table's columns) in the temporary table [`CANDIDATE_ROWS`]
/// of `connection`, made for one statement.
pub(super) fn load_candidate_rows(connection: &Connection, batches: Vec<RecordBatch>) -> Result<()> {
    connection.execute_batch(&format!(
        "CREATE TEMPORARY TABLE {CANDIDATE_ROWS} AS SELECT * EXCLUDE (uri) FROM (SELECT {POST_COLUMNS_EMPTY}) WHERE false"
    ))?;
    // One batch: the appender makes a chunk of each.
    let rows = arrow::compute::concat_batches(&candidate_schema(), &batches)?;
    let mut appender = connection.appender(CANDIDATE_ROWS)?;
    appender.append_record_batch(rows)?;
    appender.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_selection_skips_to_each_row_within_the_groups_that_hold_one() {
        let (groups, selectors) = selection([10, 10, 10, 5].into_iter(), &[0, 3, 4, 25, 29, 34]);
        assert_eq!(groups, vec![0, 2, 3]);
        let steps: Vec<(bool, usize)> = selectors.iter().map(|s| (s.skip, s.row_count)).collect();
        assert_eq!(
            steps,
            vec![
                (false, 1),
                (true, 2),
                (false, 1),
                (false, 1),
                (true, 5),
                (true, 5),
                (false, 1),
                (true, 3),
                (false, 1),
                (true, 4),
                (false, 1)
            ]
        );
        let selected: usize = selectors.iter().filter(|s| !s.skip).map(|s| s.row_count).sum();
        assert_eq!(selected, 6);
    }
}
