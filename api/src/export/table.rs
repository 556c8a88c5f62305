//! An export as a table. Its columns come from the query's selection and the schema's types, so
//! they are known before it runs (an empty answer still has them, typed). Its rows come from the
//! answer's one root field: the items of a list, the nodes of a connection, or the one object.
//! Nested objects flatten into `parent_child` columns; lists of scalars stay lists (Parquet
//! lists, JSON arrays, JSON text in CSV); a list of objects inside a row is refused.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_graphql::parser::types::{
    BaseType, DocumentOperations, ExecutableDocument, Field, OperationType, Selection, SelectionSet, Type, TypeKind,
    TypeSystemDefinition,
};
use lake::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, ListBuilder, StringArray, StringBuilder,
    TimestampMicrosecondArray,
};
use lake::arrow::datatypes::{DataType, Field as ArrowField, Schema, TimeUnit};
use lake::arrow::record_batch::RecordBatch;
use lake::parquet::arrow::ArrowWriter;
use lake::parquet::basic::{Compression, ZstdLevel};
use lake::parquet::file::properties::WriterProperties;
use serde_json::Value;

use super::spec::Format;

/// The object types of the schema and the types of their fields.
#[derive(Debug, Default)]
pub struct SchemaTypes {
    fields: HashMap<String, HashMap<String, Type>>,
    query_root: String,
}

impl SchemaTypes {
    pub fn from_sdl(sdl: &str) -> Result<SchemaTypes, String> {
        let document = async_graphql::parser::parse_schema(sdl).map_err(|e| e.to_string())?;
        let mut types = SchemaTypes { query_root: "Query".to_owned(), ..SchemaTypes::default() };
        for definition in document.definitions {
            match definition {
                TypeSystemDefinition::Type(definition) => {
                    if let TypeKind::Object(object) = &definition.node.kind {
                        let fields = object
                            .fields
                            .iter()
                            .map(|f| (f.node.name.node.to_string(), f.node.ty.node.clone()))
                            .collect();
                        types.fields.insert(definition.node.name.node.to_string(), fields);
                    }
                }
                TypeSystemDefinition::Schema(schema) => {
                    if let Some(query) = &schema.node.query {
                        types.query_root = query.node.to_string();
                    }
                }
                TypeSystemDefinition::Directive(_) => {}
            }
        }
        Ok(types)
    }

    /// The types of the schema Skyglass serves.
    pub fn skyglass() -> SchemaTypes {
        SchemaTypes::from_sdl(&crate::graphql::sdl()).expect("the schema's own SDL parses")
    }

    fn is_object(&self, name: &str) -> bool {
        self.fields.contains_key(name)
    }
}

/// How a column's values are typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Float,
    Boolean,
    Text,
    /// RFC 3339 in the answer; a UTC timestamp (microseconds) in Parquet.
    DateTime,
}

impl Kind {
    fn of_scalar(name: &str) -> Kind {
        match name {
            "Int" => Kind::Int,
            "Float" => Kind::Float,
            "Boolean" => Kind::Boolean,
            "DateTime" => Kind::DateTime,
            // String, ID, enums.
            _ => Kind::Text,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Int => "int",
            Kind::Float => "float",
            Kind::Boolean => "boolean",
            Kind::Text => "text",
            Kind::DateTime => "datetime",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The response keys from the row down, joined by `_`.
    pub name: String,
    path: Vec<String>,
    pub kind: Kind,
    /// A list of values of `kind`.
    pub list: bool,
}

/// Where the rows are under the root field.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RowsAt {
    /// The root field is a list: its items.
    Items,
    /// A connection: `nodes` (by its response key).
    Nodes(String),
    /// A connection: each of `edges`' `node` (by their response keys).
    Edges(String, String),
    /// The root field is one object: one row (none when it is null).
    Single,
}

/// The table an export's query makes.
#[derive(Debug, Clone)]
pub struct TablePlan {
    root: String,
    rows: RowsAt,
    pub columns: Vec<Column>,
    /// The variables the operation declares, with their types.
    variables: HashMap<String, Type>,
}

/// Fragments nest at most this deep (a cycle is an error, not a stack overflow).
const MAX_DEPTH: usize = 32;

impl TablePlan {
    pub fn new(types: &SchemaTypes, query: &str, operation_name: Option<&str>) -> Result<TablePlan, String> {
        let document = async_graphql::parser::parse_query(query).map_err(|e| format!("does not parse: {e}"))?;
        let operation = match (&document.operations, operation_name) {
            (DocumentOperations::Single(operation), _) => &operation.node,
            (DocumentOperations::Multiple(operations), Some(name)) => {
                &operations
                    .iter()
                    .find(|(n, _)| n.as_str() == name)
                    .ok_or_else(|| format!("has no operation named {name:?}"))?
                    .1
                    .node
            }
            (DocumentOperations::Multiple(_), None) => {
                return Err("has several operations: name the one to run with `operation_name`".to_owned());
            }
        };
        if operation.ty != OperationType::Query {
            return Err("must be a query (not a mutation or subscription)".to_owned());
        }
        let mut roots = Vec::new();
        collect_fields(&operation.selection_set.node, &document, &mut roots, 0)?;
        roots.retain(|f| f.name.node != "__typename");
        let [root] = roots.as_slice() else {
            return Err(format!(
                "must select exactly one root field (the table's rows), not {}: use one export per table",
                roots.len()
            ));
        };
        let root_type = types
            .fields
            .get(&types.query_root)
            .and_then(|fields| fields.get(root.name.node.as_str()))
            .ok_or_else(|| format!("`{}` is not a field of {}", root.name.node, types.query_root))?;
        let (rows, row_type, row_selection) = rows_of(types, &document, root, root_type)?;
        let mut columns = Vec::new();
        collect_columns(types, &document, &row_type, row_selection, &mut Vec::new(), &mut columns, 0)?;
        if columns.is_empty() {
            return Err("selects no column".to_owned());
        }
        let mut seen = HashSet::new();
        for column in &columns {
            if !seen.insert(column.name.as_str()) {
                return Err(format!("two selections make the column `{}`: give one an alias", column.name));
            }
        }
        let variables = operation
            .variable_definitions
            .iter()
            .map(|v| (v.node.name.node.to_string(), v.node.var_type.node.clone()))
            .collect();
        Ok(TablePlan { root: root.response_key().node.to_string(), rows, columns, variables })
    }

    /// Whether the query declares the variable `$name`.
    pub fn declares(&self, name: &str) -> bool {
        self.variables.contains_key(name)
    }

    /// The named type of a declared variable that is not a list (`DateTime` for `$since:
    /// DateTime!`).
    pub fn variable_type(&self, name: &str) -> Option<&str> {
        match &self.variables.get(name)?.base {
            BaseType::Named(named) => Some(named.as_str()),
            BaseType::List(_) => None,
        }
    }

    /// The rows of an answer's `data`.
    pub fn rows<'a>(&self, data: &'a Value) -> Vec<&'a Value> {
        let root = &data[self.root.as_str()];
        match &self.rows {
            RowsAt::Items => root.as_array().map(|items| items.iter().collect()).unwrap_or_default(),
            RowsAt::Nodes(nodes) => {
                root[nodes.as_str()].as_array().map(|items| items.iter().collect()).unwrap_or_default()
            }
            RowsAt::Edges(edges, node) => root[edges.as_str()]
                .as_array()
                .map(|edges| edges.iter().map(|edge| &edge[node.as_str()]).collect())
                .unwrap_or_default(),
            RowsAt::Single => (!root.is_null()).then_some(root).into_iter().collect(),
        }
    }

    /// The rows as a file of `format`.
    pub fn encode(&self, rows: &[&Value], format: Format) -> Result<Vec<u8>, String> {
        match format {
            Format::Parquet => self.parquet(rows),
            Format::Csv => self.csv(rows),
            Format::Jsonl => Ok(self.jsonl(rows)),
        }
    }

    fn parquet(&self, rows: &[&Value]) -> Result<Vec<u8>, String> {
        let mut fields = Vec::new();
        let mut arrays: Vec<ArrayRef> = Vec::new();
        for column in &self.columns {
            let values = rows.iter().map(|row| column.value(row));
            let (data_type, array): (DataType, ArrayRef) = if column.list {
                let mut builder = ListBuilder::new(StringBuilder::new());
                for value in values {
                    match value {
                        Value::Array(items) => {
                            for item in items {
                                builder.values().append_option(text_of(item));
                            }
                            builder.append(true);
                        }
                        _ => builder.append(false),
                    }
                }
                let item = Arc::new(ArrowField::new_list_field(DataType::Utf8, true));
                (DataType::List(item), Arc::new(builder.finish()))
            } else {
                match column.kind {
                    Kind::Int => (DataType::Int64, Arc::new(values.map(Value::as_i64).collect::<Int64Array>())),
                    Kind::Float => (DataType::Float64, Arc::new(values.map(Value::as_f64).collect::<Float64Array>())),
                    Kind::Boolean => {
                        (DataType::Boolean, Arc::new(values.map(Value::as_bool).collect::<BooleanArray>()))
                    }
                    Kind::Text => (DataType::Utf8, Arc::new(values.map(text_of).collect::<StringArray>())),
                    Kind::DateTime => {
                        let micros = values
                            .map(|value| match value.as_str() {
                                None => Ok(None),
                                Some(text) => chrono::DateTime::parse_from_rfc3339(text)
                                    .map(|t| Some(t.timestamp_micros()))
                                    .map_err(|e| format!("column `{}`: {text:?} is not a time: {e}", column.name)),
                            })
                            .collect::<Result<TimestampMicrosecondArray, String>>()?
                            .with_timezone("UTC");
                        (DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), Arc::new(micros))
                    }
                }
            };
            fields.push(ArrowField::new(&column.name, data_type, true));
            arrays.push(array);
        }
        let schema = Arc::new(Schema::new(fields));
        let batch = if rows.is_empty() {
            RecordBatch::new_empty(schema.clone())
        } else {
            RecordBatch::try_new(schema.clone(), arrays).map_err(|e| e.to_string())?
        };
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).map_err(|e| e.to_string())?))
            .build();
        let mut bytes = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut bytes, schema, Some(properties)).map_err(|e| e.to_string())?;
        writer.write(&batch).map_err(|e| e.to_string())?;
        writer.close().map_err(|e| e.to_string())?;
        Ok(bytes)
    }

    fn csv(&self, rows: &[&Value]) -> Result<Vec<u8>, String> {
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.write_record(self.columns.iter().map(|c| c.name.as_str())).map_err(|e| e.to_string())?;
        for row in rows {
            let fields = self.columns.iter().map(|column| match column.value(row) {
                Value::Null => String::new(),
                Value::String(text) => text.clone(),
                // Lists as JSON arrays; numbers and booleans as JSON writes them.
                other => other.to_string(),
            });
            writer.write_record(fields).map_err(|e| e.to_string())?;
        }
        writer.into_inner().map_err(|e| e.to_string())
    }

    fn jsonl(&self, rows: &[&Value]) -> Vec<u8> {
        let mut out = String::new();
        for row in rows {
            out.push('{');
            for (n, column) in self.columns.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(column.name.clone()).to_string());
                out.push(':');
                out.push_str(&column.value(row).to_string());
            }
            out.push_str("}\n");
        }
        out.into_bytes()
    }
}

impl Column {
    fn value<'a>(&self, row: &'a Value) -> &'a Value {
        self.path.iter().fold(row, |value, key| &value[key.as_str()])
    }
}

fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

/// The fields of a selection set, fragments spread in.
fn collect_fields<'a>(
    set: &'a SelectionSet,
    document: &'a ExecutableDocument,
    out: &mut Vec<&'a Field>,
    depth: usize,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err("nests fragments too deep (or in a cycle)".to_owned());
    }
    for item in &set.items {
        match &item.node {
            Selection::Field(field) => {
                let key = &field.node.response_key().node;
                match out.iter().find(|seen| seen.response_key().node == *key) {
                    None => out.push(&field.node),
                    Some(seen) if seen.name.node == field.node.name.node => {}
                    Some(_) => return Err(format!("selects two fields as `{key}`: give one an alias")),
                }
            }
            Selection::InlineFragment(fragment) => {
                collect_fields(&fragment.node.selection_set.node, document, out, depth + 1)?;
            }
            Selection::FragmentSpread(spread) => {
                let name = &spread.node.fragment_name.node;
                let fragment = document.fragments.get(name).ok_or_else(|| format!("has no fragment {name}"))?;
                collect_fields(&fragment.node.selection_set.node, document, out, depth + 1)?;
            }
        }
    }
    Ok(())
}

/// Where the rows are under the root field, their object type and their selection.
fn rows_of<'a>(
    types: &SchemaTypes,
    document: &'a ExecutableDocument,
    root: &'a Field,
    root_type: &Type,
) -> Result<(RowsAt, String, &'a SelectionSet), String> {
    let name = root.response_key().node.as_str();
    match &root_type.base {
        BaseType::List(item) => match &item.base {
            BaseType::Named(object) if types.is_object(object) => {
                Ok((RowsAt::Items, object.to_string(), &root.selection_set.node))
            }
            _ => Err(format!("`{name}` is not a list of objects")),
        },
        BaseType::Named(object) if types.is_object(object) => {
            let mut fields = Vec::new();
            collect_fields(&root.selection_set.node, document, &mut fields, 0)?;
            let object_fields = &types.fields[object.as_str()];
            let find = |wanted: &str| fields.iter().find(|f| f.name.node == wanted).copied();
            if let (Some(nodes), Some(ty)) = (find("nodes"), object_fields.get("nodes"))
                && let Some(node_type) = list_item_object(types, ty)
            {
                let at = RowsAt::Nodes(nodes.response_key().node.to_string());
                return Ok((at, node_type, &nodes.selection_set.node));
            }
            if let (Some(edges), Some(ty)) = (find("edges"), object_fields.get("edges"))
                && let Some(edge_type) = list_item_object(types, ty)
            {
                let mut edge_fields = Vec::new();
                collect_fields(&edges.selection_set.node, document, &mut edge_fields, 0)?;
                let node = edge_fields
                    .iter()
                    .find(|f| f.name.node == "node")
                    .ok_or_else(|| format!("`{name}.edges` must select `node`"))?;
                let node_type = match &types.fields[edge_type.as_str()]["node"].base {
                    BaseType::Named(node_type) => node_type.to_string(),
                    BaseType::List(_) => return Err(format!("`{name}.edges.node` is not an object")),
                };
                let at = RowsAt::Edges(edges.response_key().node.to_string(), node.response_key().node.to_string());
                return Ok((at, node_type, &node.selection_set.node));
            }
            Ok((RowsAt::Single, object.to_string(), &root.selection_set.node))
        }
        BaseType::Named(_) => Err(format!("`{name}` is a scalar: select a field that returns objects")),
    }
}

fn list_item_object(types: &SchemaTypes, ty: &Type) -> Option<String> {
    match &ty.base {
        BaseType::List(item) => match &item.base {
            BaseType::Named(object) if types.is_object(object) => Some(object.to_string()),
            _ => None,
        },
        BaseType::Named(_) => None,
    }
}

fn collect_columns(
    types: &SchemaTypes,
    document: &ExecutableDocument,
    object: &str,
    selection: &SelectionSet,
    path: &mut Vec<String>,
    out: &mut Vec<Column>,
    depth: usize,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err("nests objects too deep".to_owned());
    }
    let mut fields = Vec::new();
    collect_fields(selection, document, &mut fields, 0)?;
    for field in fields {
        let key = field.response_key().node.to_string();
        path.push(key);
        let name = path.join("_");
        let result = if field.name.node == "__typename" {
            out.push(Column { name, path: path.clone(), kind: Kind::Text, list: false });
            Ok(())
        } else {
            let ty = types.fields[object]
                .get(field.name.node.as_str())
                .ok_or_else(|| format!("`{}` is not a field of {object}", field.name.node))?;
            match &ty.base {
                BaseType::Named(inner) if types.is_object(inner) => {
                    collect_columns(types, document, inner, &field.selection_set.node, path, out, depth + 1)
                }
                BaseType::Named(scalar) => {
                    out.push(Column { name, path: path.clone(), kind: Kind::of_scalar(scalar), list: false });
                    Ok(())
                }
                BaseType::List(item) => match &item.base {
                    BaseType::Named(scalar) if !types.is_object(scalar) => {
                        out.push(Column { name, path: path.clone(), kind: Kind::of_scalar(scalar), list: true });
                        Ok(())
                    }
                    _ => Err(format!(
                        "`{name}` is a list of objects inside a row, which is no column: export it with a query of its own"
                    )),
                },
            }
        };
        path.pop();
        result?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn plan(query: &str) -> Result<TablePlan, String> {
        TablePlan::new(&SchemaTypes::skyglass(), query, None)
    }

    fn names(plan: &TablePlan) -> Vec<(&str, Kind, bool)> {
        plan.columns.iter().map(|c| (c.name.as_str(), c.kind, c.list)).collect()
    }

    #[test]
    fn columns_come_typed_from_the_selection_and_rows_from_the_root_field() {
        let buckets = plan(
            "query($since: DateTime) { timeBuckets(interval: DAY, filter: {since: $since}) { start group n: posts } }",
        )
        .unwrap();
        assert_eq!(
            names(&buckets),
            [("start", Kind::DateTime, false), ("group", Kind::Text, false), ("n", Kind::Int, false)]
        );
        assert!(buckets.declares("since") && !buckets.declares("until"));
        assert_eq!(buckets.variable_type("since"), Some("DateTime"));
        let data = json!({"timeBuckets": [{"start": "2026-01-01T00:00:00Z", "group": null, "n": 3}]});
        assert_eq!(buckets.rows(&data).len(), 1);

        let authors = plan("{ topAuthors(first: 5) { posts author { did handle } } }").unwrap();
        assert_eq!(
            names(&authors),
            [("posts", Kind::Int, false), ("author_did", Kind::Text, false), ("author_handle", Kind::Text, false)]
        );

        let posts = plan("{ posts(first: 3) { totalCount edges { cursor node { uri langs ...F } } } } fragment F on Post { embedType }").unwrap();
        assert_eq!(
            names(&posts),
            [("uri", Kind::Text, false), ("langs", Kind::Text, true), ("embedType", Kind::Text, false)]
        );
        let data = json!({"posts": {"totalCount": 2, "edges": [{"cursor": "a", "node": {"uri": "x", "langs": ["en"], "embedType": "NONE"}}]}});
        assert_eq!(posts.rows(&data), [&data["posts"]["edges"][0]["node"]]);

        let lake = plan("{ lake { posts generation } }").unwrap();
        assert_eq!(lake.rows(&json!({"lake": {"posts": 1, "generation": 2}})).len(), 1);
    }

    #[test]
    fn queries_that_make_no_table_are_refused_with_the_reason() {
        let cases = [
            ("{ lake { posts } topHashtags { tag } }", "exactly one root field"),
            ("{ topAuthors { author { topHashtags { tag } } } }", "list of objects"),
            ("{ topHashtags { tag tag: posts } }", "give one an alias"),
            ("{ nope { a } }", "not a field of Query"),
            ("{ topHashtags { nope } }", "not a field of HashtagCount"),
            ("query A { lake { posts } } query B { lake { files } }", "operation_name"),
            ("{ topHashtags { ...F } } fragment F on HashtagCount { ...F }", "too deep"),
            ("{ lake ", "does not parse"),
        ];
        for (query, expected) in cases {
            let error = plan(query).unwrap_err();
            assert!(error.contains(expected), "{query}: {error}");
        }
    }

    #[test]
    fn every_format_writes_the_same_rows() {
        let plan = plan("{ posts { nodes { uri createdAt langs imageCount } } }").unwrap();
        let data = json!({"posts": {"nodes": [
            {"uri": "at://a, \"quoted\"", "createdAt": "2026-01-01T00:00:00.5Z", "langs": ["en", "de"], "imageCount": 2},
            {"uri": "at://b", "createdAt": "2026-01-02T00:00:00Z", "langs": [], "imageCount": 0},
        ]}});
        let rows = plan.rows(&data);
        let csv = String::from_utf8(plan.encode(&rows, Format::Csv).unwrap()).unwrap();
        assert_eq!(
            csv,
            "uri,createdAt,langs,imageCount\n\"at://a, \"\"quoted\"\"\",2026-01-01T00:00:00.5Z,\"[\"\"en\"\",\"\"de\"\"]\",2\nat://b,2026-01-02T00:00:00Z,[],0\n"
        );
        let jsonl = String::from_utf8(plan.encode(&rows, Format::Jsonl).unwrap()).unwrap();
        let first: Value = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
        assert_eq!(first, data["posts"]["nodes"][0]);
        let parquet = plan.encode(&rows, Format::Parquet).unwrap();
        assert_eq!(&parquet[..4], b"PAR1");
        assert_eq!(plan.encode(&rows, Format::Parquet).unwrap(), parquet, "the same rows, the same bytes");
        // No rows: still a file with the columns.
        assert!(!plan.encode(&[], Format::Parquet).unwrap().is_empty());
        assert_eq!(
            String::from_utf8(plan.encode(&[], Format::Csv).unwrap()).unwrap(),
            "uri,createdAt,langs,imageCount\n"
        );
    }
}
