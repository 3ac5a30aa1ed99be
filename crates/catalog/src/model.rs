//! Catalog values: input parsed once at the edge into newtypes, and the
//! documents the catalog answers with.

use chrono::{DateTime, Utc};
use commerce_domain::{ParseCode, ParseError, ProductId};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;

/// The highest price a product can have (minor units); keeps order totals far
/// from `i64` overflow.
pub const MAX_PRICE: i64 = 100_000_000_000;
/// The largest stock one product can hold (the column is `INTEGER`).
pub const MAX_STOCK: i64 = 1_000_000_000;
/// Page size when the client names none.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// Larger page sizes are capped to this, not refused.
pub const MAX_PAGE_SIZE: u32 = 100;
/// Deepest page served: `OFFSET` walks the index, so its cost grows with the
/// page number; 10 000 pages of 100 covers a million products.
pub const MAX_PAGE: u32 = 10_000;

/// A product name: trimmed, 1..=200 characters (the column's check), no
/// control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductName(String);

impl ProductName {
    pub const MAX_CHARS: usize = 200;

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        commerce_domain::parse_name(raw, Self::MAX_CHARS).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A product description: at most 5 000 characters (the column's check);
/// line breaks and tabs are allowed, other control characters are not.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Description(String);

impl Description {
    pub const MAX_CHARS: usize = 5_000;

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let trimmed = raw.trim();
        if raw.chars().count() > Self::MAX_CHARS {
            return Err(ParseError::new(
                ParseCode::InvalidDescription,
                format!("description must be at most {} characters", Self::MAX_CHARS),
            ));
        }
        // What was sent, not what trimming leaves: a carriage return or a
        // form feed at either end is refused as the schema says.
        if raw
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            return Err(ParseError::new(
                ParseCode::InvalidDescription,
                "description must not contain control characters",
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A price in minor units, 0..=[`MAX_PRICE`] (free items are allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price(i64);

impl Price {
    pub fn parse(raw: i64) -> Result<Self, ParseError> {
        if !(0..=MAX_PRICE).contains(&raw) {
            return Err(ParseError::new(
                ParseCode::InvalidPrice,
                format!("price must be between 0 and {MAX_PRICE}"),
            ));
        }
        Ok(Self(raw))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// Units in stock, 0..=[`MAX_STOCK`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stock(i32);

impl Stock {
    pub fn parse(raw: i64) -> Result<Self, ParseError> {
        match i32::try_from(raw) {
            Ok(v) if (0..=MAX_STOCK).contains(&raw) => Ok(Self(v)),
            _ => Err(ParseError::new(
                ParseCode::InvalidStock,
                format!("stock must be between 0 and {MAX_STOCK}"),
            )),
        }
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

/// A validated product to create.
#[derive(Debug, Clone)]
pub struct NewProduct {
    pub name: ProductName,
    pub description: Description,
    pub price: Price,
    pub stock: Stock,
}

impl NewProduct {
    pub fn parse(
        name: &str,
        description: Option<&str>,
        price: i64,
        stock: i64,
    ) -> Result<Self, ParseError> {
        Ok(Self {
            name: ProductName::parse(name)?,
            description: description
                .map(Description::parse)
                .transpose()?
                .unwrap_or_default(),
            price: Price::parse(price)?,
            stock: Stock::parse(stock)?,
        })
    }
}

/// A validated partial change: absent fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct ProductPatch {
    pub name: Option<ProductName>,
    pub description: Option<Description>,
    pub price: Option<Price>,
    pub stock: Option<Stock>,
}

impl ProductPatch {
    /// Refuses a patch that changes nothing (`empty_patch`), so a client bug
    /// does not silently bump `updated_at`.
    pub fn parse(
        name: Option<&str>,
        description: Option<&str>,
        price: Option<i64>,
        stock: Option<i64>,
    ) -> Result<Self, ParseError> {
        let patch = Self {
            name: name.map(ProductName::parse).transpose()?,
            description: description.map(Description::parse).transpose()?,
            price: price.map(Price::parse).transpose()?,
            stock: stock.map(Stock::parse).transpose()?,
        };
        if patch.name.is_none()
            && patch.description.is_none()
            && patch.price.is_none()
            && patch.stock.is_none()
        {
            return Err(ParseError::new(
                ParseCode::EmptyPatch,
                "give at least one of name, description, price, stock",
            ));
        }
        Ok(patch)
    }
}

/// Which page of the product list, parsed from `?page=&size=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    page: u32,
    size: u32,
}

impl PageRequest {
    /// `page` counts from 1 (default 1, at most [`MAX_PAGE`]); `size`
    /// defaults to [`DEFAULT_PAGE_SIZE`] and is capped at [`MAX_PAGE_SIZE`].
    pub fn parse(page: Option<i64>, size: Option<i64>) -> Result<Self, ParseError> {
        let page = match page {
            None => 1,
            Some(p) => u32::try_from(p)
                .ok()
                .filter(|p| (1..=MAX_PAGE).contains(p))
                .ok_or_else(|| {
                    ParseError::new(
                        ParseCode::InvalidPage,
                        format!("page must be between 1 and {MAX_PAGE}"),
                    )
                })?,
        };
        let size = match size {
            None => DEFAULT_PAGE_SIZE,
            Some(s) if s < 1 => {
                return Err(ParseError::new(
                    ParseCode::InvalidSize,
                    "size must be at least 1",
                ))
            }
            Some(s) => u32::try_from(s).unwrap_or(MAX_PAGE_SIZE).min(MAX_PAGE_SIZE),
        };
        Ok(Self { page, size })
    }

    pub fn page(self) -> u32 {
        self.page
    }

    pub fn size(self) -> u32 {
        self.size
    }

    pub fn offset(self) -> i64 {
        i64::from(self.page - 1) * i64::from(self.size)
    }
}

/// A product as admins see it (answers of create and change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Product {
    #[schema(value_type = i64)]
    pub id: ProductId,
    pub name: String,
    pub description: String,
    pub price: i64,
    pub stock: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Product {
    pub fn detail(&self) -> ProductDetail {
        ProductDetail {
            id: self.id,
            name: self.name.clone(),
            description: self.description.clone(),
            price: self.price,
            stock: self.stock,
            updated_at: self.updated_at,
        }
    }
}

/// The product page (`GET /api/v1/products/{id}`), also the Redis L2 document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProductDetail {
    #[schema(value_type = i64)]
    pub id: ProductId,
    pub name: String,
    pub description: String,
    pub price: i64,
    /// May lag PostgreSQL by the cache bound (see the crate docs).
    pub stock: i32,
    pub updated_at: DateTime<Utc>,
}

impl ProductDetail {
    /// Orders copies of one product: every change moves `updated_at`
    /// strictly forward (see `store::update`), so a higher version is newer.
    pub fn version(&self) -> i64 {
        self.updated_at.timestamp_micros()
    }
}

/// One row of the product list (no description, to keep pages small).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ProductSummary {
    #[schema(value_type = i64)]
    pub id: ProductId,
    pub name: String,
    pub price: i64,
    pub stock: i32,
    pub updated_at: DateTime<Utc>,
}

/// `GET /api/v1/products` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ProductPage {
    pub items: Vec<ProductSummary>,
    pub page: u32,
    pub size: u32,
    /// Products in the catalog; counted at most once per `count_ttl` per
    /// instance, so it may trail a just-created product by that much.
    pub total: i64,
}

/// One entry of the popular-products board.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PopularItem {
    #[schema(value_type = i64)]
    pub product_id: ProductId,
    pub name: String,
    pub price: i64,
    /// Units sold over the last three days (UTC), today included.
    pub units_sold: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(
            ProductName::parse("  mug ").map(|n| n.as_str().to_owned()),
            Ok("mug".to_owned())
        );
        assert_eq!(
            ProductName::parse(" ").unwrap_err().code,
            ParseCode::InvalidName
        );
        assert!(ProductName::parse(&"x".repeat(201)).is_err());
        assert!(ProductName::parse(&"가".repeat(200)).is_ok());
        assert!(ProductName::parse("a\u{7}b").is_err());
    }

    #[test]
    fn descriptions_allow_line_breaks_only() {
        assert!(Description::parse("line one\nline two\tend").is_ok());
        assert_eq!(
            Description::parse("bell\u{7}").unwrap_err().code,
            ParseCode::InvalidDescription
        );
        assert!(Description::parse(&"d".repeat(5_001)).is_err());
        // Trimmed ends are checked too (the schema refuses them).
        assert!(Description::parse("ends with a return\r").is_err());
        assert!(Description::parse("\u{c}starts with a form feed").is_err());
        assert!(Description::parse("trailing line break\n").is_ok());
    }

    #[test]
    fn prices_and_stock_are_bounded() {
        assert_eq!(Price::parse(0).map(Price::get), Ok(0));
        assert_eq!(Price::parse(-1).unwrap_err().code, ParseCode::InvalidPrice);
        assert!(Price::parse(MAX_PRICE + 1).is_err());
        assert_eq!(Stock::parse(50).map(Stock::get), Ok(50));
        assert_eq!(Stock::parse(-1).unwrap_err().code, ParseCode::InvalidStock);
        assert!(Stock::parse(MAX_STOCK + 1).is_err());
        assert!(Stock::parse(i64::MAX).is_err());
    }

    #[test]
    fn empty_patch_is_refused() {
        assert_eq!(
            ProductPatch::parse(None, None, None, None)
                .unwrap_err()
                .code,
            ParseCode::EmptyPatch
        );
        assert!(ProductPatch::parse(None, None, Some(5), None).is_ok());
        assert_eq!(
            ProductPatch::parse(Some(""), None, None, None)
                .unwrap_err()
                .code,
            ParseCode::InvalidName
        );
    }

    #[test]
    fn pages_default_cap_and_refuse() {
        let p = PageRequest::parse(None, None).unwrap();
        assert_eq!((p.page(), p.size(), p.offset()), (1, DEFAULT_PAGE_SIZE, 0));
        let p = PageRequest::parse(Some(3), Some(1_000)).unwrap();
        assert_eq!((p.page(), p.size(), p.offset()), (3, MAX_PAGE_SIZE, 200));
        assert_eq!(
            PageRequest::parse(Some(0), None).unwrap_err().code,
            ParseCode::InvalidPage
        );
        assert_eq!(
            PageRequest::parse(Some(-2), None).unwrap_err().code,
            ParseCode::InvalidPage
        );
        assert!(PageRequest::parse(Some(i64::from(MAX_PAGE) + 1), None).is_err());
        assert_eq!(
            PageRequest::parse(None, Some(0)).unwrap_err().code,
            ParseCode::InvalidSize
        );
        assert_eq!(
            PageRequest::parse(None, Some(i64::MAX)).map(PageRequest::size),
            Ok(MAX_PAGE_SIZE)
        );
    }
}

/// Where an answer came from (the `X-Cache` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    L1,
    L2,
    Db,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::L1 => "l1",
            Self::L2 => "l2",
            Self::Db => "db",
        }
    }
}

/// An answer with its provenance.
#[derive(Debug, Clone)]
pub struct Served<T> {
    pub value: T,
    pub source: Source,
    /// Set when a stale copy stood in for a failed load: how old it is.
    pub stale_age: Option<Duration>,
}
