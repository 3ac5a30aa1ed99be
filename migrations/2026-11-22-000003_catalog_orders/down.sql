DROP INDEX user_coupons_order_idx;
DROP TABLE payments;
DROP TABLE order_items;
DROP TABLE orders;
DROP TABLE product_sales_daily;
DROP TABLE products;
